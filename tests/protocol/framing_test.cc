#include "protocol/framing.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace kvtier::protocol {
namespace {

struct Decoded {
  std::vector<std::string> lines;
  LineDecoder::State state = LineDecoder::State::kOk;
  std::optional<std::string> tail;
};

// Feeds `input` cut at `cuts` (sorted offsets), then finishes.
Decoded DecodeChunks(std::string_view input, const std::vector<size_t>& cuts,
                     size_t max_line_bytes = kDefaultMaxLineBytes) {
  LineDecoder decoder(max_line_bytes);
  Decoded out;
  size_t start = 0;
  auto feed = [&](size_t end) {
    out.state = decoder.Feed(input.substr(start, end - start),
                             [&](std::string_view line) { out.lines.emplace_back(line); });
    start = end;
  };
  for (size_t cut : cuts) feed(cut);
  feed(input.size());
  out.tail = decoder.Finish();
  return out;
}

const char kStream[] =
    "{\"id\":1,\"op\":\"health\"}\n"
    "\n"
    "{\"id\":2}\r\n"
    " \t\r\n"
    "\r\n"
    "a\rb\n"
    "\x01\xff\x00garbage\n"
    "last";

const std::vector<std::string> kStreamLines = {"{\"id\":1,\"op\":\"health\"}", "{\"id\":2}", "a\rb",
                                               std::string("\x01\xff\x00garbage", 10)};

TEST(LineDecoderTest, WholeBuffer) {
  std::string_view input(kStream, sizeof(kStream) - 1);
  Decoded d = DecodeChunks(input, {});
  EXPECT_EQ(d.lines, kStreamLines);
  EXPECT_EQ(d.state, LineDecoder::State::kOk);
  ASSERT_TRUE(d.tail.has_value());
  EXPECT_EQ(*d.tail, "last");
}

TEST(LineDecoderTest, EveryChunkingWithUpToTwoCuts) {
  std::string_view input(kStream, sizeof(kStream) - 1);
  for (size_t a = 0; a <= input.size(); ++a) {
    for (size_t b = a; b <= input.size(); ++b) {
      Decoded d = DecodeChunks(input, {a, b});
      ASSERT_EQ(d.lines, kStreamLines) << "cuts " << a << ", " << b;
      ASSERT_EQ(d.tail, std::optional<std::string>("last")) << "cuts " << a << ", " << b;
    }
  }
}

TEST(LineDecoderTest, ByteByByteAndRandomChunkings) {
  std::string_view input(kStream, sizeof(kStream) - 1);
  std::vector<size_t> every;
  for (size_t i = 1; i < input.size(); ++i) every.push_back(i);
  EXPECT_EQ(DecodeChunks(input, every).lines, kStreamLines);

  std::mt19937 rng(7);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<size_t> cuts;
    for (size_t i = 1; i < input.size(); ++i) {
      if (rng() % 4 == 0) cuts.push_back(i);
    }
    ASSERT_EQ(DecodeChunks(input, cuts).lines, kStreamLines) << "trial " << trial;
  }
}

TEST(LineDecoderTest, LimitIsInclusive) {
  constexpr size_t kMax = 10;
  const std::string exact(kMax, 'x');
  Decoded d = DecodeChunks(exact + "\n" + exact + "\n", {}, kMax);
  EXPECT_EQ(d.state, LineDecoder::State::kOk);
  EXPECT_EQ(d.lines, (std::vector<std::string>{exact, exact}));

  d = DecodeChunks(exact + "x\n", {}, kMax);
  EXPECT_EQ(d.state, LineDecoder::State::kTooLarge);
  EXPECT_TRUE(d.lines.empty());
  EXPECT_FALSE(d.tail.has_value());
}

TEST(LineDecoderTest, CarriageReturnCountsTowardsTheLimit) {
  constexpr size_t kMax = 10;
  Decoded ok = DecodeChunks(std::string(kMax - 1, 'x') + "\r\n", {}, kMax);
  EXPECT_EQ(ok.state, LineDecoder::State::kOk);
  EXPECT_EQ(ok.lines, std::vector<std::string>{std::string(kMax - 1, 'x')});
  Decoded over = DecodeChunks(std::string(kMax, 'x') + "\r\n", {}, kMax);
  EXPECT_EQ(over.state, LineDecoder::State::kTooLarge);
}

TEST(LineDecoderTest, TooLargeIsReportedBeforeTheNewlineArrives) {
  constexpr size_t kMax = 16;
  LineDecoder decoder(kMax);
  int lines = 0;
  auto count = [&](std::string_view) { ++lines; };
  EXPECT_EQ(decoder.Feed("ok\n0123456789", count), LineDecoder::State::kOk);
  EXPECT_EQ(lines, 1);
  EXPECT_EQ(decoder.buffered_bytes(), 10u);
  EXPECT_EQ(decoder.Feed("012345", count), LineDecoder::State::kOk);  // exactly 16 buffered
  EXPECT_EQ(decoder.buffered_bytes(), kMax);
  EXPECT_EQ(decoder.Feed("6", count), LineDecoder::State::kTooLarge);  // 17th byte, no '\n'
  EXPECT_EQ(decoder.buffered_bytes(), 0u);
  // Sticky: nothing more is delivered or buffered.
  EXPECT_EQ(decoder.Feed("\n{\"id\":1}\n", count), LineDecoder::State::kTooLarge);
  EXPECT_EQ(decoder.state(), LineDecoder::State::kTooLarge);
  EXPECT_EQ(lines, 1);
  EXPECT_FALSE(decoder.Finish().has_value());
}

TEST(LineDecoderTest, LinesBeforeAnOversizedOneInTheSameChunkAreDelivered) {
  Decoded d = DecodeChunks("a\nb\n" + std::string(100, 'z') + "\nc\n", {}, 50);
  EXPECT_EQ(d.lines, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(d.state, LineDecoder::State::kTooLarge);
}

TEST(LineDecoderTest, HugeLineIsNotBuffered) {
  constexpr size_t kMax = 1 << 20;
  LineDecoder decoder(kMax);
  const std::string chunk(64 << 10, 'a');
  LineDecoder::State state = LineDecoder::State::kOk;
  size_t fed = 0;
  while (state == LineDecoder::State::kOk) {
    state = decoder.Feed(chunk, [](std::string_view) { FAIL() << "no line expected"; });
    fed += chunk.size();
    ASSERT_LE(decoder.buffered_bytes(), kMax);
  }
  EXPECT_EQ(fed, kMax + chunk.size());  // failed on the first chunk that crossed the limit
}

TEST(LineDecoderTest, DefaultLimitIs16MiB) {
  LineDecoder decoder;
  EXPECT_EQ(decoder.max_line_bytes(), size_t{16} << 20);
}

TEST(LineDecoderTest, FinishReportsOnlyANonBlankUnterminatedLine) {
  EXPECT_EQ(DecodeChunks("x\nabc", {}).tail, std::optional<std::string>("abc"));
  EXPECT_EQ(DecodeChunks("abc\r", {}).tail, std::optional<std::string>("abc"));
  EXPECT_FALSE(DecodeChunks("abc\n", {}).tail.has_value());
  EXPECT_FALSE(DecodeChunks(" \t\r", {}).tail.has_value());
  EXPECT_FALSE(DecodeChunks("", {}).tail.has_value());
  LineDecoder decoder;
  (void)decoder.Feed("half", [](std::string_view) {});
  EXPECT_EQ(decoder.Finish(), std::optional<std::string>("half"));
  EXPECT_FALSE(decoder.Finish().has_value());  // the buffer was cleared
}

TEST(LineDecoderTest, BinaryGarbagePassesThroughUnchanged) {
  std::string garbage;
  for (int i = 0; i < 256; ++i) {
    if (i != '\n') garbage.push_back(static_cast<char>(i));
  }
  Decoded d = DecodeChunks(garbage + "\n", {3, 100, 200});
  ASSERT_EQ(d.lines.size(), 1u);
  EXPECT_EQ(d.lines[0], garbage);
}

TEST(LineDecoderTest, BlankLines) {
  EXPECT_TRUE(IsBlankLine(""));
  EXPECT_TRUE(IsBlankLine(" \t\r"));
  EXPECT_FALSE(IsBlankLine(" x "));
  EXPECT_FALSE(IsBlankLine(std::string_view("\0", 1)));
  EXPECT_TRUE(DecodeChunks("\n\n\r\n \n\t\n", {}).lines.empty());
}

TEST(AppendLineTest, AppendsOneFrame) {
  std::string out = "{}\n";
  AppendLine(R"({"id":1})", &out);
  EXPECT_EQ(out, "{}\n{\"id\":1}\n");
}

TEST(AppendLineDeathTest, NewlineInsideIsAProgrammerError) {
  std::string out;
  EXPECT_DEATH(AppendLine("{\n}", &out), "find");
}

}  // namespace
}  // namespace kvtier::protocol
