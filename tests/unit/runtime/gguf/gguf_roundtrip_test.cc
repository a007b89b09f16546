// Writer -> reader round trips: every value type, nested and empty arrays,
// custom alignment, tensors of several dtypes, and the typed getters.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/gguf/gguf.h"

namespace tandem::gguf {
namespace {

using ::testing::HasSubstr;

std::string msg(const absl::Status& st) { return std::string(st.message()); }

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> out(n);
  for (uint8_t& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

Value all_scalars_array() {
  return Value::array(ValueType::kUint16, {Value::u16(0), Value::u16(65535), Value::u16(7)});
}

// Every value type, arrays of every element type, nested and empty arrays.
std::vector<KeyValue> sample_metadata() {
  std::vector<KeyValue> kvs = {
      {"general.architecture", Value::str("llama")},
      {"t.u8", Value::u8(200)},
      {"t.i8", Value::i8(-100)},
      {"t.u16", Value::u16(60000)},
      {"t.i16", Value::i16(-30000)},
      {"t.u32", Value::u32(4000000000u)},
      {"t.i32", Value::i32(-2000000000)},
      {"t.f32", Value::f32(1.5f)},
      {"t.bool", Value::boolean(true)},
      {"t.false", Value::boolean(false)},
      {"t.str", Value::str(std::string("with\0nul and \xe2\x96\x81 utf8", 21))},
      {"t.empty_str", Value::str("")},
      {"t.u64", Value::u64(std::numeric_limits<uint64_t>::max())},
      {"t.i64", Value::i64(std::numeric_limits<int64_t>::min())},
      {"t.f64", Value::f64(3.25)},
      {"a.u8", Value::array(ValueType::kUint8, {Value::u8(1), Value::u8(255)})},
      {"a.i8", Value::array(ValueType::kInt8, {Value::i8(-1), Value::i8(127)})},
      {"a.u16", all_scalars_array()},
      {"a.i16", Value::array(ValueType::kInt16, {Value::i16(-5)})},
      {"a.u32", Value::array(ValueType::kUint32, {Value::u32(1), Value::u32(4294967295u)})},
      {"a.i32", Value::i32_array({-1, 0, 1, 2147483647})},
      {"a.f32", Value::f32_array({0.5f, -2.0f, 1e-30f})},
      {"a.bool", Value::array(ValueType::kBool, {Value::boolean(true), Value::boolean(false)})},
      {"a.str", Value::string_array({"<s>", "", "\xe2\x96\x81the"})},
      {"a.u64", Value::array(ValueType::kUint64, {Value::u64(1ull << 40)})},
      {"a.i64", Value::array(ValueType::kInt64, {Value::i64(-(1ll << 40)), Value::i64(5)})},
      {"a.f64", Value::array(ValueType::kFloat64, {Value::f64(-0.125), Value::f64(1e300)})},
      {"a.nested",
       Value::array(ValueType::kArray, {Value::i32_array({1, 2}), Value::string_array({"x"}),
                                        Value::array(ValueType::kArray, {Value::f32_array({}),
                                                                         all_scalars_array()})})},
      {"a.empty_u8", Value::array(ValueType::kUint8, {})},
      {"a.empty_str", Value::string_array({})},
      {"a.empty_nested", Value::array(ValueType::kArray, {})},
  };
  return kvs;
}

struct SampleTensor {
  std::string name;
  std::vector<int64_t> dims;
  DType type;
  std::vector<uint8_t> data;
};

std::vector<SampleTensor> sample_tensors() {
  std::vector<SampleTensor> ts = {
      {"token_embd.weight", {7, 3}, DType::kF32, {}},
      {"blk.0.attn_norm.weight", {5}, DType::kF16, {}},
      {"blk.0.attn_q.weight", {64, 3}, DType::kQ8_0, {}},
      {"blk.0.ffn_up.weight", {32, 2, 2}, DType::kQ4_0, {}},
      {"empty", {0, 4}, DType::kF32, {}},
      {"blk.0.ffn_down.weight", {96, 1, 1, 2}, DType::kQ8_0, {}},
  };
  uint32_t seed = 1;
  for (SampleTensor& t : ts) {
    int64_t rows = 1;
    for (size_t i = 1; i < t.dims.size(); ++i) rows *= t.dims[i];
    t.data = random_bytes(row_bytes(t.type, t.dims[0]) * static_cast<size_t>(rows), seed++);
  }
  return ts;
}

Writer sample_writer(uint32_t alignment) {
  Writer w;
  for (const KeyValue& kv : sample_metadata()) w.set(kv.key, kv.value);
  if (alignment != 0) w.set_alignment(alignment);
  bool use_fill = false;
  for (const SampleTensor& t : sample_tensors()) {
    if (use_fill) {
      std::vector<uint8_t> data = t.data;
      w.add_tensor(t.name, t.dims, t.type, [data](std::span<uint8_t> dst) {
        ASSERT_EQ(dst.size(), data.size());
        std::memcpy(dst.data(), data.data(), data.size());
      });
    } else {
      w.add_tensor(t.name, t.dims, t.type, t.data);
    }
    use_fill = !use_fill;
  }
  return w;
}

void check_contents(const File& f, uint64_t alignment) {
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), alignment);
  EXPECT_EQ(f.data_offset() % alignment, 0u);
  std::vector<KeyValue> want = sample_metadata();
  size_t extra = alignment != kDefaultAlignment || f.find("general.alignment") ? 1 : 0;
  ASSERT_EQ(f.metadata().size(), want.size() + extra);
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(f.metadata()[i].key, want[i].key);
    EXPECT_TRUE(f.metadata()[i].value == want[i].value) << want[i].key;
  }
  std::vector<SampleTensor> ts = sample_tensors();
  ASSERT_EQ(f.tensors().size(), ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    const TensorInfo& info = f.tensors()[i];
    EXPECT_EQ(info.name, ts[i].name);
    EXPECT_EQ(info.dims, ts[i].dims);
    EXPECT_EQ(info.type, ts[i].type);
    EXPECT_EQ(info.n_bytes, ts[i].data.size());
    EXPECT_EQ(info.offset % alignment, 0u);
    EXPECT_EQ(info.file_offset, f.data_offset() + info.offset);
    EXPECT_EQ(f.find_tensor(ts[i].name), &info);
    std::vector<uint8_t> got(info.n_bytes);
    ASSERT_TRUE(f.read_tensor(info, got.data()).ok());
    EXPECT_EQ(got, ts[i].data) << info.name;
    if (info.n_bytes > 4) {
      std::vector<uint8_t> part(3);
      ASSERT_TRUE(f.read_tensor_range(info, 2, 3, part.data()).ok());
      EXPECT_TRUE(std::equal(part.begin(), part.end(), ts[i].data.begin() + 2));
    }
    absl::Status past = f.read_tensor_range(info, info.n_bytes, 1, got.data());
    EXPECT_EQ(past.code(), absl::StatusCode::kOutOfRange);
  }
  EXPECT_EQ(f.find_tensor("missing"), nullptr);
  EXPECT_EQ(f.tensors()[0].n_elements(), 21);
  EXPECT_EQ(f.tensors()[0].n_rows(), 3);
  EXPECT_EQ(f.tensors()[3].n_rows(), 4);
}

TEST(GgufRoundTrip, MemoryDefaultAlignment) {
  auto image = sample_writer(0).write_to_memory();
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->size() % kDefaultAlignment, 0u);
  auto f = File::Parse(*image, "mem.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->path(), "mem.gguf");
  EXPECT_EQ(f->file_size(), image->size());
  EXPECT_EQ(f->find("general.alignment"), nullptr);
  check_contents(*f, kDefaultAlignment);
}

TEST(GgufRoundTrip, FileCustomAlignment) {
  std::string path =
      ::testing::TempDir() + "/gguf_roundtrip_" + std::to_string(::getpid()) + ".gguf";
  ASSERT_TRUE(sample_writer(64).write(path).ok());
  auto f = File::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  auto a = f->get_u32("general.alignment");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, 64u);
  check_contents(*f, 64);
  // Copies share the open descriptor; the file can be read after the original is gone.
  File copy = *f;
  f = absl::InvalidArgumentError("dropped");
  std::vector<uint8_t> got(copy.tensors()[2].n_bytes);
  EXPECT_TRUE(copy.read_tensor(copy.tensors()[2], got.data()).ok());
  ::unlink(path.c_str());
}

TEST(GgufRoundTrip, WriteReplacesAtomicallyAndReportsBadPath) {
  std::string path = ::testing::TempDir() + "/gguf_replace_" + std::to_string(::getpid()) + ".gguf";
  Writer small;
  small.set("k", Value::u32(1));
  ASSERT_TRUE(small.write(path).ok());
  ASSERT_TRUE(sample_writer(0).write(path).ok());
  auto f = File::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors().size(), sample_tensors().size());
  ::unlink(path.c_str());

  absl::Status st = small.write("/nonexistent-dir/x/model.gguf");
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(msg(st), HasSubstr("/nonexistent-dir/x/model.gguf"));
}

// A header-only file: the same directory as the full file, no data, opened
// only with allow_missing_data; tensors without a fill are accepted there and
// refused by a full write.
TEST(GgufRoundTrip, HeaderOnly) {
  const std::string base = ::testing::TempDir() + "/gguf_header_" + std::to_string(::getpid());
  const Writer full = sample_writer(64);
  ASSERT_TRUE(full.write(base + "-full.gguf").ok());
  ASSERT_TRUE(full.write_header_only(base + "-header.gguf").ok());
  auto whole = File::Open(base + "-full.gguf");
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_FALSE(File::Open(base + "-header.gguf").ok());
  auto header = File::Open(base + "-header.gguf", {.allow_missing_data = true});
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->file_size(), whole->data_offset());
  EXPECT_EQ(header->data_offset(), whole->data_offset());
  ASSERT_EQ(header->metadata().size(), whole->metadata().size());
  for (size_t i = 0; i < whole->metadata().size(); ++i) {
    EXPECT_EQ(header->metadata()[i].key, whole->metadata()[i].key);
    EXPECT_TRUE(header->metadata()[i].value == whole->metadata()[i].value);
  }
  ASSERT_EQ(header->tensors().size(), whole->tensors().size());
  for (size_t i = 0; i < whole->tensors().size(); ++i) {
    const TensorInfo& a = header->tensors()[i];
    const TensorInfo& b = whole->tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.dims, b.dims);
    EXPECT_EQ(a.type, b.type);
    EXPECT_EQ(a.file_offset, b.file_offset);
    EXPECT_EQ(a.n_bytes, b.n_bytes);
  }

  Writer no_data;
  no_data.add_tensor("big", {4096, 4096}, DType::kQ4_K, Writer::Fill{});
  ASSERT_TRUE(no_data.write_header_only(base + "-nodata.gguf").ok());
  auto f = File::Open(base + "-nodata.gguf", {.allow_missing_data = true});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors()[0].n_bytes, 4096u * 4096 / 256 * 144);
  EXPECT_THAT(msg(no_data.write(base + "-nodata.gguf")), HasSubstr("tensor 'big' has no data"));
  for (const char* suffix : {"-full.gguf", "-header.gguf", "-nodata.gguf"}) {
    ::unlink((base + suffix).c_str());
  }
}

TEST(GgufRoundTrip, SetReplacesInPlace) {
  Writer w;
  w.set("a", Value::u32(1));
  w.set("b", Value::str("x"));
  w.set("a", Value::str("replaced"));
  auto image = w.write_to_memory();
  ASSERT_TRUE(image.ok());
  auto f = File::Parse(*image, "m.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->metadata().size(), 2u);
  EXPECT_EQ(f->metadata()[0].key, "a");
  EXPECT_EQ(*f->get_string("a"), "replaced");
  EXPECT_EQ(f->metadata()[1].key, "b");
  EXPECT_TRUE(f->tensors().empty());
}

TEST(GgufRoundTrip, WriterRejectsBadInput) {
  auto expect_error = [](const Writer& w, std::string_view what) {
    auto image = w.write_to_memory();
    ASSERT_FALSE(image.ok());
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(msg(image.status()), HasSubstr(std::string(what)));
  };
  std::vector<uint8_t> four(4);
  {
    Writer w;
    w.add_tensor("t", {1}, DType::kF32, four);
    w.add_tensor("t", {1}, DType::kF32, four);
    expect_error(w, "duplicate tensor name 't'");
  }
  {
    Writer w;
    w.add_tensor("q", {16}, DType::kQ8_0, four);
    expect_error(w, "block size 32");
  }
  {
    Writer w;
    w.add_tensor("t", {2}, DType::kF32, four);
    expect_error(w, "tensor 't' has 4 bytes of data but its shape needs 8");
  }
  {
    Writer w;
    w.add_tensor("t", {1, 1, 1, 1, 1}, DType::kF32, four);
    expect_error(w, "n_dims 5");
  }
  {
    Writer w;
    w.set_alignment(3);
    expect_error(w, "alignment 3");
  }
  {
    Writer w;
    w.set("general.alignment", Value::i32(32));
    expect_error(w, "general.alignment has type i32");
  }
  {
    Writer w;
    Value bad = Value::u32(1);
    bad.type = ValueType::kString;
    w.set("k", bad);
    expect_error(w, "key 'k'");
  }
  {
    Writer w;
    w.set("k", Value::array(ValueType::kInt32, {Value::i32(1), Value::u8(2)}));
    expect_error(w, "holds an element of type u8");
  }
}

TEST(GgufRoundTrip, TypedGetters) {
  Writer w;
  for (const KeyValue& kv : sample_metadata()) w.set(kv.key, kv.value);
  w.set("a.u32_big", Value::array(ValueType::kUint32, {Value::u32(1), Value::u32(3000000000u)}));
  auto image = w.write_to_memory();
  ASSERT_TRUE(image.ok());
  auto parsed = File::Parse(*image, "g.gguf");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const File& f = *parsed;

  // Integers convert between widths when in range.
  EXPECT_EQ(*f.get_u32("t.u8"), 200u);
  EXPECT_EQ(*f.get_u32("t.u16"), 60000u);
  EXPECT_EQ(*f.get_u32("t.u32"), 4000000000u);
  EXPECT_EQ(*f.get_u64("t.u64"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(*f.get_i64("t.i8"), -100);
  EXPECT_EQ(*f.get_i64("t.i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(*f.get_i64("t.u32"), 4000000000);
  EXPECT_EQ(f.get_u64("t.i16").status().code(), absl::StatusCode::kInvalidArgument);
  auto neg = f.get_u32("t.i32");
  EXPECT_EQ(neg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(msg(neg.status()), HasSubstr("out of range for u32"));
  EXPECT_THAT(msg(neg.status()), HasSubstr("g.gguf"));
  EXPECT_FALSE(f.get_i64("t.u64").ok());

  EXPECT_EQ(*f.get_f32("t.f32"), 1.5f);
  EXPECT_EQ(*f.get_f32("t.f64"), 3.25f);
  EXPECT_TRUE(*f.get_bool("t.bool"));
  EXPECT_FALSE(*f.get_bool("t.false"));
  EXPECT_EQ(*f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_string("t.str")->size(), 21u);

  EXPECT_EQ(*f.get_string_array("a.str"), (std::vector<std::string>{"<s>", "", "\xe2\x96\x81the"}));
  EXPECT_EQ(*f.get_f32_array("a.f32"), (std::vector<float>{0.5f, -2.0f, 1e-30f}));
  EXPECT_EQ(*f.get_i32_array("a.i32"), (std::vector<int32_t>{-1, 0, 1, 2147483647}));
  EXPECT_EQ(*f.get_i32_array("a.u16"), (std::vector<int32_t>{0, 65535, 7}));
  EXPECT_EQ(*f.get_i32_array("a.u8"), (std::vector<int32_t>{1, 255}));
  EXPECT_TRUE(f.get_string_array("a.empty_str")->empty());
  auto big = f.get_i32_array("a.u32_big");
  EXPECT_THAT(msg(big.status()), HasSubstr("element 1 is out of range for i32"));
  EXPECT_FALSE(f.get_f32_array("a.f64").ok());  // 1e300 does not fit a float

  auto missing = f.get_u32("no.such.key");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(msg(missing.status()), HasSubstr("g.gguf: key 'no.such.key' not found"));

  auto wrong = f.get_string("t.u32");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(msg(wrong.status()), HasSubstr("key 't.u32' has type u32, expected string"));
  auto wrong_elem = f.get_string_array("a.i32");
  EXPECT_THAT(msg(wrong_elem.status()),
              HasSubstr("key 'a.i32' has type array of i32, expected array of string"));
  EXPECT_FALSE(f.get_f32_array("a.i32").ok());
  EXPECT_FALSE(f.get_i32_array("a.f32").ok());
  EXPECT_FALSE(f.get_i32_array("t.i32").ok());
  EXPECT_FALSE(f.get_u32("t.bool").ok());
  EXPECT_FALSE(f.get_bool("t.u8").ok());
  EXPECT_FALSE(f.get_f32("t.u32").ok());
}

TEST(GgufRoundTrip, ValueTypeNames) {
  EXPECT_EQ(value_type_name(ValueType::kUint8), "u8");
  EXPECT_EQ(value_type_name(ValueType::kString), "string");
  EXPECT_EQ(value_type_name(ValueType::kArray), "array");
  EXPECT_EQ(value_type_name(ValueType::kFloat64), "f64");
}

}  // namespace
}  // namespace tandem::gguf
