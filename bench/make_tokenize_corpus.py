#!/usr/bin/env python3
"""Writes bench/data/tokenize_corpus.jsonl: varied texts (one JSON string per line) on which
kvtier's tokenizer is compared with llama.cpp (bench/compare_tokenize.py).

Deterministic (fixed seed): rerunning gives the same file. Hand-written texts first, then
generated ones (digit runs, whitespace mixes, random code point soups, long paragraphs).
"""
import json
import os
import random

HAND = [
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "trailing space ",
    "  two leading spaces and two trailing  ",
    "I'm sure they're right: we've seen it, you'll see, he'd know, it's John's.",
    "I'M SURE THEY'RE RIGHT, WE'VE SEEN IT, YOU'LL SEE, HE'D KNOW, IT'S JOHN'S",
    "She said 'hello' and 'bye'; rock 'n' roll; '90s; o'clock; 'tis",
    "don't won't can't shan't y'all ma'am",
    "The year 2024 had 366 days; 3.14159 is pi; 1,000,000 is a million; -42 and +7.",
    "0123456789",
    "12345678901234567890123456789012345678901234567890",
    "Phone: +1 (555) 123-4567, ext. 89",
    "Dates: 2024-03-15, 15/03/2024, March 15th, 2024, 3/15/24 at 10:45:30 PM UTC",
    "Version 1.2.3-beta+build.456 released on 2023.12.31",
    "0x1F600 0b1011 0o777 1e-10 6.022e23 ∞ ½ ¾ ² ³",
    "Roman numerals: Ⅰ Ⅱ Ⅲ Ⅻ ⅰⅱⅲ; circled: ① ② ⑳",
    "Arabic-Indic digits: ٠١٢٣٤٥٦٧٨٩ and Devanagari digits: ०१२३४५६७८९",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "#include <stdio.h>\n\nint main(int argc, char** argv) {\n\tprintf(\"%d\\n\", argc);\n\treturn 0;\n}\n",
    "fn main() {\n    let v: Vec<i32> = (1..=10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}",
    "function add(a, b) { return a + b; }\nconst x = add(1, 2) ?? 0; // => 3\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%smith%' ORDER BY id DESC;",
    "<html>\n  <body class=\"main\">\n    <p>Hello &amp; welcome</p>\n  </body>\n</html>",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
    "#!/bin/bash\nfor f in *.txt; do\n  echo \"$f\" | tr '[:lower:]' '[:upper:]'\ndone",
    "public static void main(String[] args) { System.out.println(\"Hello\"); }",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # squares\r\nprint(x)\r\n",
    "\\begin{equation} E = mc^2 \\end{equation} and $\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}$",
    "{\"name\": \"kvtier\", \"version\": 1, \"tags\": [\"llm\", \"cache\"], \"nested\": {\"a\": null, \"b\": true}}",
    "key: value\nlist:\n  - one\n  - two\nnumber: 42\n",
    "https://example.com/path/to/page?query=1&lang=en#section-2",
    "Email me at john.doe+tag@example.co.uk or visit http://www.example.org:8080/index.html",
    "C:\\Users\\Admin\\Documents\\file (1).txt and /usr/local/bin/python3.11",
    "!!!???...,,,;;;:::---___+++===***&&&%%%$$$###@@@",
    "...and then... well... ?!?! -- — – ‒ ― (really) [yes] {no} <maybe>",
    "«Bonjour», dit-il. „Guten Tag“, sagte sie. “Hello,” he said. ‘Hi,’ she said.",
    "Tabs\tbetween\twords\tand\t\tdouble\t\t\ttriple",
    "Line one\nLine two\n\nLine four\n\n\n\nLine eight",
    "Windows\r\nline\r\nendings\r\n\r\n",
    "   \t  \n  mixed whitespace  \t\n",
    "\n",
    " ",
    "\t",
    "    ",
    "a",
    "\u00a0non-breaking\u00a0space and\u2003em space and\u3000ideographic space",
    "zero\u200bwidth\u200cjoiners\u200dhere\ufeffBOM",
    "日本語のテキストです。東京は日本の首都です。",
    "中文文本：我爱自然语言处理。今天天气很好！",
    "한국어 텍스트입니다. 안녕하세요, 세계!",
    "Русский текст: Привет, мир! Как дела? Ёлка и ЁЛКА.",
    "Ελληνικά: Γειά σου Κόσμε! αβγδε ΑΒΓΔΕ",
    "العربية: مرحبا بالعالم! كيف حالك؟ ١٢٣",
    "עברית: שלום עולם! מה שלומך?",
    "हिन्दी: नमस्ते दुनिया! आप कैसे हैं? क्षत्रिय",
    "ไทย: สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "தமிழ்: வணக்கம் உலகம்! বাংলা: হ্যালো বিশ্ব! ગુજરાતી",
    "Tiếng Việt: Xin chào thế giới! Đây là một câu.",
    "Türkçe: İstanbul'da ılık bir gün. Ğ ğ Ş ş Ç ç",
    "Polski: Zażółć gęślą jaźń. Čeština: Příliš žluťoučký kůň.",
    "ქართული: გამარჯობა მსოფლიო! Հայերեն: Բարեւ աշխարհ!",
    "አማርኛ: ሰላም ልዑል! ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ",
    "Combining: e\u0301 a\u0300 o\u0308 n\u0303 (decomposed) vs é à ö ñ (composed)",
    "Z̸̢̛a̷l̴g̶o̵ ̸t̷e̶x̵t̴ with m̶a̷n̵y̴ marks",
    "Devanagari with virama: क्‍ष and ZWJ/ZWNJ: क्‌ष",
    "Emoji: 😀😃😄😁 👍🏽 ❤️ 🎉🎊",
    "ZWJ family: 👨‍👩‍👧‍👦 and 👩🏽‍💻 and 🏳️‍🌈 and 🧑‍🤝‍🧑",
    "Flags: 🇺🇸🇬🇧🇫🇷🇯🇵🇩🇪 and keycaps: 1️⃣ #️⃣ *️⃣",
    "Math: ∀x∈ℝ, ∃y: x² + y² ≥ 0 ⇒ √(x²) = |x| ∑∏∫∂∇",
    "Symbols: © ® ™ € £ ¥ ¢ § ¶ † ‡ • … ‰ ′ ″",
    "Box drawing: ┌──┬──┐ │ab│cd│ └──┴──┘ ░▒▓█",
    "Arrows → ← ↑ ↓ ↔ ⇐ ⇒ and shapes ■□▲△●○◆◇★☆",
    "Music: 𝄞 𝄢 and math letters: 𝐀𝐁𝐂 𝒜ℬ𝒞 𝔸𝔹ℂ",
    "Old scripts: 𐌰𐌱𐌲 (Gothic) 𓀀𓀁 (hieroglyphs) 𒀀 (cuneiform)",
    "CJK ext B: 𠀀𠀁𠀂 and compatibility: 豈更車",
    "Fullwidth: ＡＢＣ ａｂｃ １２３ ！？ and halfwidth: ｱｲｳ",
    "Unicode 15: 𑼄𑼅 (Kawi) 𞀰𞀱 (Cyrillic modifiers) 𱍐 (CJK ext H)",
    "Unicode 15.1: 𮯰𮯱 (CJK ext I) ⿼⿽ (IDC)",
    "Unicode 16: Ᲊᲊ (Cyrillic Tje) 𐵊𐵋 (Garay) 𑎀𑎁 (Tulu-Tigalari)",
    "Private use: \ue000\ue001 and noncharacter \ufdd0 and specials \ufffc\ufffd",
    "Control chars: \u0001\u0002\u001b[31mred\u001b[0m \u007f \u0085 \u2028 \u2029",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n2+2 = 4.<|im_end|>",
    "text<|im_end|>text<|im_start|>text",
    "<|im_start|><|im_start|><|im_end|><|im_end|>",
    "<|endoftext|>After the end of text<|endoftext|>",
    "<repo_name>kvtier<file_sep>src/main.cc<filename>x.py<gh_stars>100",
    "<jupyter_start><jupyter_code>print(1)<jupyter_output>1<empty_output>",
    "<issue_start>Bug<issue_comment>Fixed<issue_closed>",
    "< |im_start| > <|im_start <im_start|> <|IM_START|>",
    "<|im_start|>user  \n  spaced  <|im_end|>  ",
    "<|im_start|>",
    "1<|im_end|>2",
    "A very long word: pneumonoultramicroscopicsilicovolcanoconiosis and antidisestablishmentarianism",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "abababababababababababababababababababababababab",
    "=====================================================================",
    "------------------------------------------------------------------",
    "CamelCaseIdentifier snake_case_identifier kebab-case-identifier SCREAMING_CASE",
    "getHTTPResponseCode XMLHttpRequest iPhone eBay McDonald's O'Reilly",
    "Mr. Smith Jr. & Dr. Jones Sr. met at 5 p.m. on Jan. 3rd, i.e., e.g., etc.",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.",
    "Pack my box with five dozen liquor jugs! Sphinx of black quartz, judge my vow.",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D",
    "''''' \"\"\"\"\" ``` ~~~ ^^^ |||",
    "Markdown: # Title\n\n## Sub\n\n- item *bold* **strong** `code`\n\n```python\nprint('x')\n```\n",
    "| col1 | col2 |\n|------|------|\n| 1    | 2    |\n",
    "$ ls -la | grep '.txt' > out.log 2>&1 && echo done || exit 1",
    "user@host:~$ sudo apt-get install -y build-essential",
    "Price: $1,299.99 (was €1.499,00) — save 13%! ¥150,000 / £999",
    "Temperature: -40°C = -40°F; 36.6 °C; 98.6°F",
    "Coordinates: 48°51′24″N 2°21′03″E",
    "ISBN 978-3-16-148410-0, DOI 10.1000/182, UUID 123e4567-e89b-12d3-a456-426614174000",
    "IPv4 192.168.0.1/24 IPv6 2001:0db8:85a3::8a2e:0370:7334 MAC 00:1A:2B:3C:4D:5E",
    "base64: SGVsbG8gV29ybGQhIFRoaXMgaXMgYSB0ZXN0Lg== hex: deadbeefcafebabe",
    "sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
]

PARAGRAPHS = [
    "Large language models process text as sequences of tokens. A tokenizer splits the input "
    "into pieces drawn from a fixed vocabulary, usually learned with byte-pair encoding. The "
    "choice of pre-tokenization rules, such as splitting digits one by one, changes how numbers "
    "are represented and can affect arithmetic ability.",
    "In 1969, Apollo 11 landed on the Moon. Neil Armstrong and Buzz Aldrin spent about 21 hours "
    "on the lunar surface, while Michael Collins orbited above in the command module Columbia. "
    "They returned to Earth on July 24, splashing down in the Pacific Ocean.",
    "The KV cache stores the keys and values of every processed token so that attention over a "
    "long context does not need to recompute them. Tiering the cache across GPU memory, host "
    "RAM and NVMe lets a daemon keep many long prompts warm, but moving pages costs bandwidth.",
    "Il était une fois, dans un pays lointain, une princesse qui s'appelait Élise. Elle aimait "
    "lire des livres près de la fenêtre, où la lumière du matin éclairait les pages jaunies.",
    "Es war einmal ein kleines Mädchen, das hieß Rotkäppchen. Eines Tages sagte die Mutter: "
    "„Komm, Rotkäppchen, da hast du ein Stück Kuchen und eine Flasche Wein.“",
    "Érase una vez un niño llamado José que vivía en un pequeño pueblo de España. ¿Sabías que "
    "su perro se llamaba Señor Bigotes? ¡Era el perro más simpático del mundo!",
]

SCRIPTS = [
    (0x41, 0x5A), (0x61, 0x7A), (0x30, 0x39), (0x21, 0x2F), (0xC0, 0xFF), (0x391, 0x3C9),
    (0x410, 0x44F), (0x5D0, 0x5EA), (0x621, 0x64A), (0x660, 0x669), (0x905, 0x939),
    (0x966, 0x96F), (0xE01, 0xE2E), (0x3041, 0x3096), (0x30A1, 0x30FA), (0x4E00, 0x4FFF),
    (0xAC00, 0xAD00), (0x1F600, 0x1F64F), (0x2200, 0x22FF), (0x300, 0x36F), (0x2000, 0x200A),
    (0x1F300, 0x1F5FF), (0x10000, 0x1005D),
]
WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", "\n\n", " \n", "\u00a0", "\u3000", "   "]
WORDS = ["the", "of", "token", "cache", "GPU", "llama", "don't", "it's", "x1", "2nd", "42",
         "3.5", "naïve", "café", "über", "東京", "мир", "😀", "<|im_end|>", "<|im_start|>", "#",
         "->", "==", "(", ")", "''", "\"", "we're", "THEY'LL"]


def generated(rng):
    out = []
    # Digit runs of every length and mixed with letters/punctuation.
    for n in range(1, 25):
        out.append("".join(rng.choice("0123456789") for _ in range(n)))
    for _ in range(12):
        parts = []
        for _ in range(rng.randint(2, 8)):
            parts.append(rng.choice(["abc", "X", "12", "345", " 6", ".", ",", "7.8", "-9", "e10",
                                     "  ", "\t", "'s", "%"]))
        out.append("".join(parts))
    # Whitespace mixes around words.
    for _ in range(20):
        parts = []
        for _ in range(rng.randint(3, 10)):
            parts.append(rng.choice(WORDS))
            parts.append(rng.choice(WHITESPACE))
        if rng.random() < 0.5:
            parts.insert(0, rng.choice(WHITESPACE))
        out.append("".join(parts))
    # Random code point soups per script and across scripts.
    for lo, hi in SCRIPTS:
        out.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(5, 30))))
    for _ in range(16):
        s = []
        for _ in range(rng.randint(10, 60)):
            if rng.random() < 0.15:
                s.append(rng.choice(WHITESPACE))
            else:
                lo, hi = rng.choice(SCRIPTS)
                s.append(chr(rng.randint(lo, hi)))
        out.append("".join(s))
    # Long paragraphs: concatenations, with numbers and chat markers sprinkled in.
    for i in range(10):
        paras = rng.sample(PARAGRAPHS, 3)
        text = "\n\n".join(paras)
        if i % 3 == 0:
            text = "<|im_start|>user\n" + text + "<|im_end|>\n<|im_start|>assistant\n"
        if i % 2 == 0:
            text += " Reference " + str(rng.randint(0, 10**12)) + "."
        out.append(text)
    out.extend(PARAGRAPHS)
    # A long text (about 10 kB).
    out.append(" ".join(PARAGRAPHS) * 4)
    return out


def main():
    rng = random.Random(20240615)
    texts = HAND + generated(rng)
    seen = set()
    uniq = [t for t in texts if not (t in seen or seen.add(t))]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                        "tokenize_corpus.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for t in uniq:
            f.write(json.dumps(t, ensure_ascii=False) + "\n")
    print(f"wrote {path}: {len(uniq)} texts")


if __name__ == "__main__":
    main()
