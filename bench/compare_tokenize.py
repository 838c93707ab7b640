#!/usr/bin/env python3
"""Compares kvtier's tokenizer with llama.cpp (llama-cpp-python) on a corpus of texts.

Run with the Python of the bench venv (bench/llamacpp-venv prints its path):

  PY=$(bench/llamacpp-venv)
  # Write the expected ids (and chat template renderings) used by tests/model/tokenizer_model_test:
  $PY bench/compare_tokenize.py --write-expected
  # Compare llama.cpp with kvtier (bench/tokenize_tool, built with -DKVTIER_BENCH=ON):
  $PY bench/compare_tokenize.py --tool build/bench/tokenize_tool [--random 3000 --seed 1]

Both modes are compared: special=True (control tokens such as <|im_start|> recognised) and
special=False (plain text). Prints "N/N texts identical (P%)" and each mismatch.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.expanduser("~/.cache/kvtier/models/SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_CORPUS = os.path.join(ROOT, "bench", "data", "tokenize_corpus.jsonl")
DEFAULT_EXPECTED = os.path.join(ROOT, "tests", "model", "data", "tokenize_expected.json")

# Conversations whose chat template rendering the model test checks.
CHATS = [
    [{"role": "user", "content": "Hello! What is the capital of France?"}],
    [{"role": "system", "content": "You are a terse assistant."},
     {"role": "user", "content": "Name three primes."},
     {"role": "assistant", "content": "2, 3, 5."}],
]


def load_corpus(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def llama_ids(llm, texts):
    out = []
    for t in texts:
        b = t.encode("utf-8")
        out.append({"special": llm.tokenize(b, add_bos=False, special=True),
                    "plain": llm.tokenize(b, add_bos=False, special=False)})
    return out


def llama_decode(llm, ids, special=False):
    """llama.cpp's token_to_piece for each id, with a buffer large enough for any token.

    (Llama.detokenize uses a 32-byte buffer per token and silently drops longer pieces.)"""
    import ctypes
    import llama_cpp
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    out = b""
    for i in ids:
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(vocab, i, buf, size, 0, special)
            if n >= 0:
                out += buf.raw[:n]
                break
            size = -n
    return out


# Code points for random texts: ASCII, whitespace, marks, several scripts, numbers of other
# scripts, emoji and joiners, and code points assigned in Unicode 15.0, 15.1 and 16.0.
RANDOM_POOL = ([0x20, 0x0A, 0x09, 0x0D, 0x27] + list(range(0x21, 0x7F)) +
               [0xA0, 0xB2, 0x300, 0x301, 0x41F, 0x5D0, 0x627, 0x661, 0x905, 0x94D, 0xE01,
                0x3000, 0x4E2D, 0x1F600, 0x200D, 0xFE0F, 0x1F1FA, 0x2028, 0x85, 0x1C, 0xFFFD,
                0x2EBF0, 0x31350, 0x1C89, 0x10D4A, 0xE000, 0x378])


def random_inputs(n, seed):
    """n byte strings: 60% random valid UTF-8 from RANDOM_POOL (some with <|im_start|>), 40%
    random bytes (mostly invalid UTF-8; lead bytes F5..F7 left out: llama.cpp aborts on them)."""
    import random
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.6:
            s = "".join(chr(rng.choice(RANDOM_POOL)) for _ in range(rng.randint(1, 40)))
            if rng.random() < 0.2:
                s = s.replace(s[:1], "<|im_start|>", 1)
            out.append(s.encode())
        else:
            b = bytes(rng.choice([rng.randint(0, 255), rng.choice(b"a 1'\n"), 0xC3, 0xE4, 0xF0,
                                  0x80, 0xBF, 0xF8]) for _ in range(rng.randint(1, 30)))
            out.append(bytes(x if x not in (0xF5, 0xF6, 0xF7) else 0x41 for x in b))
    return out


def compare_random(llm, tool, model, n, seed):
    inputs = random_inputs(n, seed)
    inp = "".join(json.dumps({"hex": b.hex()}) + "\n" for b in inputs)
    proc = subprocess.run([tool, model], input=inp.encode(), capture_output=True, check=True)
    ours = [json.loads(line) for line in proc.stdout.decode().split("\n") if line]
    same = 0
    for b, o in zip(inputs, ours):
        ok = True
        for mode, special in (("special", True), ("plain", False)):
            r = llm.tokenize(b, add_bos=False, special=special)
            if r != o[mode]:
                ok = False
                print(f"MISMATCH random ({mode}): {b!r}\n  llama.cpp {r[:40]}\n"
                      f"  kvtier    {o[mode][:40]}")
        same += ok
    print(f"{same}/{n} random inputs identical ({100.0 * same / n:.2f}%)")
    return same == n


def render_chats(template):
    import jinja2  # llama-cpp-python depends on it
    env = jinja2.Environment(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True)
    tmpl = env.from_string(template)
    rendered = []
    for msgs in CHATS:
        for gen in (True, False):
            rendered.append({"messages": msgs, "add_generation_prompt": gen,
                             "text": tmpl.render(messages=msgs, add_generation_prompt=gen,
                                                 bos_token="", eos_token="<|im_end|>")})
    return rendered


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("KVTIER_TEST_MODEL", DEFAULT_MODEL))
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--expected", default=DEFAULT_EXPECTED)
    ap.add_argument("--write-expected", action="store_true",
                    help="write llama.cpp's ids to --expected instead of comparing")
    ap.add_argument("--tool", default=os.path.join(ROOT, "build", "bench", "tokenize_tool"),
                    help="kvtier's tokenize_tool binary")
    ap.add_argument("--random", type=int, default=0, metavar="N",
                    help="also compare N random inputs (valid and invalid UTF-8)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    import llama_cpp
    texts = load_corpus(args.corpus)
    llm = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False)
    ref = llama_ids(llm, texts)

    if args.write_expected:
        template = llm.metadata.get("tokenizer.chat_template", "")
        doc = {
            "generator": "bench/compare_tokenize.py --write-expected",
            "llama_cpp_python": llama_cpp.__version__,
            "model": os.path.basename(args.model),
            "cases": [{"text": t, **r} for t, r in zip(texts, ref)],
            "chat": render_chats(template) if template else [],
        }
        os.makedirs(os.path.dirname(args.expected), exist_ok=True)
        with open(args.expected, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=0)
            f.write("\n")
        print(f"wrote {args.expected}: {len(texts)} texts, {len(doc['chat'])} chat renderings")
        return 0

    if not os.path.exists(args.tool):
        print(f"error: {args.tool} not found (build it: cmake -DKVTIER_BENCH=ON, "
              f"ninja tokenize_tool)", file=sys.stderr)
        return 2
    inp = "".join(json.dumps(t) + "\n" for t in texts)
    proc = subprocess.run([args.tool, args.model], input=inp.encode(), capture_output=True,
                          check=True)
    ours = [json.loads(line) for line in proc.stdout.decode().split("\n") if line]
    if len(ours) != len(texts):
        print(f"error: tool gave {len(ours)} results for {len(texts)} texts", file=sys.stderr)
        return 2
    same = 0
    for i, (t, r, o) in enumerate(zip(texts, ref, ours)):
        ok = True
        for mode in ("special", "plain"):
            if r[mode] != o[mode]:
                ok = False
                print(f"MISMATCH #{i} ({mode}): {t[:80]!r}\n  llama.cpp {r[mode][:40]}\n"
                      f"  kvtier    {o[mode][:40]}")
        ref_text = llama_decode(llm, r["plain"]).decode("utf-8", errors="replace")
        if o["decoded"] != ref_text:
            ok = False
            print(f"DECODE MISMATCH #{i}: {t[:80]!r}")
        same += ok
    n = len(texts)
    print(f"{same}/{n} texts identical ({100.0 * same / n:.2f}%)")
    random_ok = True
    if args.random > 0:
        random_ok = compare_random(llm, args.tool, args.model, args.random, args.seed)
    return 0 if same == n and random_ok else 1


if __name__ == "__main__":
    sys.exit(main())
