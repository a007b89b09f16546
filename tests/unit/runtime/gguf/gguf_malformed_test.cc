// A corpus of malformed files made by mutating a valid writer image: each one
// must give a clean INVALID_ARGUMENT naming the file, the problem and the
// byte offset, and never crash or allocate without bound.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/gguf/gguf.h"

namespace tandem::gguf {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kName[] = "bad.gguf";
constexpr uint64_t kMax64 = std::numeric_limits<uint64_t>::max();

std::vector<uint8_t> base_image() {
  Writer w;
  w.set("general.architecture", Value::str("llama"));
  w.set_alignment(32);
  w.set("test.key1", Value::u32(7));
  w.set("test.key2", Value::str("hello"));
  w.set("test.arr", Value::i32_array({1, 2, 3}));
  w.set("test.flag", Value::boolean(true));
  w.add_tensor("tensor.alpha", {8, 2}, DType::kF32, std::vector<uint8_t>(64, 1));
  w.add_tensor("tensor.bravo", {32, 2}, DType::kQ8_0, std::vector<uint8_t>(68, 2));
  auto image = w.write_to_memory();
  TANDEM_CHECK(image.ok());
  return *image;
}

size_t find(const std::vector<uint8_t>& img, std::string_view s) {
  auto it = std::search(img.begin(), img.end(), s.begin(), s.end());
  TANDEM_CHECK(it != img.end());
  return static_cast<size_t>(it - img.begin());
}

void put_u32(std::vector<uint8_t>& img, size_t at, uint32_t v) { std::memcpy(&img[at], &v, 4); }
void put_u64(std::vector<uint8_t>& img, size_t at, uint64_t v) { std::memcpy(&img[at], &v, 8); }
uint64_t get_u64(const std::vector<uint8_t>& img, size_t at) {
  uint64_t v;
  std::memcpy(&v, &img[at], 8);
  return v;
}

// Byte offsets of a key/value's fields: the key's length, its type, its value.
struct KeyAt {
  size_t len, type, value;
};
KeyAt key_at(const std::vector<uint8_t>& img, std::string_view key) {
  size_t bytes = find(img, key);
  return {bytes - 8, bytes + key.size(), bytes + key.size() + 4};
}

// Byte offsets of a tensor info's fields.
struct TensorAt {
  size_t len, n_dims, dims, type, offset;
};
TensorAt tensor_at(const std::vector<uint8_t>& img, std::string_view name, uint32_t n_dims) {
  size_t bytes = find(img, name);
  size_t nd = bytes + name.size();
  return {bytes - 8, nd, nd + 4, nd + 4 + 8 * n_dims, nd + 4 + 8 * n_dims + 4};
}

absl::Status parse(const std::vector<uint8_t>& img) { return File::Parse(img, kName).status(); }

// Fails the test unless parsing gives INVALID_ARGUMENT "bad.gguf: ..." with
// `what` and, when given, "at offset N".
void expect_error(const std::vector<uint8_t>& img, std::string_view what, int64_t offset = -1) {
  absl::Status st = parse(img);
  ASSERT_FALSE(st.ok()) << "expected an error about: " << what;
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  std::string m(st.message());
  EXPECT_THAT(m, StartsWith(std::string(kName) + ": "));
  EXPECT_THAT(m, HasSubstr(std::string(what)));
  EXPECT_THAT(m, HasSubstr(" at offset "));
  if (offset >= 0) {
    EXPECT_THAT(m, HasSubstr(" at offset " + std::to_string(offset)));
  }
}

TEST(GgufMalformed, BaseImageIsValid) {
  std::vector<uint8_t> img = base_image();
  auto f = File::Parse(img, kName);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors().size(), 2u);
}

TEST(GgufMalformed, TruncatedAtEveryOffset) {
  std::vector<uint8_t> img = base_image();
  auto f = File::Parse(img, kName);
  ASSERT_TRUE(f.ok());
  const TensorInfo& last = f->tensors().back();
  const uint64_t end = last.file_offset + last.n_bytes;
  for (size_t len = 0; len < img.size(); ++len) {
    std::vector<uint8_t> cut(img.begin(), img.begin() + static_cast<ptrdiff_t>(len));
    absl::Status st = parse(cut);
    if (len >= end) {  // only trailing padding is missing
      EXPECT_TRUE(st.ok()) << len << ": " << st;
      continue;
    }
    ASSERT_FALSE(st.ok()) << "truncated to " << len << " bytes";
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_THAT(std::string(st.message()), StartsWith("bad.gguf: ")) << len;
    if (len < f->data_offset()) {  // inside the header, or in the padding after it
      EXPECT_THAT(std::string(st.message()),
                  testing::AnyOf(HasSubstr("truncated"), HasSubstr("bytes left"),
                                 HasSubstr("remain"), HasSubstr("impossible"),
                                 HasSubstr("cannot fit"), HasSubstr("extends past end of file")))
          << st;
    } else {
      EXPECT_THAT(std::string(st.message()), HasSubstr("extends past end of file")) << st;
    }
  }
}

TEST(GgufMalformed, TruncatedFilesOnDisk) {
  std::vector<uint8_t> img = base_image();
  std::string path = ::testing::TempDir() + "/gguf_trunc_" + std::to_string(::getpid()) + ".gguf";
  for (size_t len : {size_t{0}, size_t{3}, size_t{23}, size_t{40}, img.size() - 40}) {
    FILE* out = std::fopen(path.c_str(), "wb");
    ASSERT_NE(out, nullptr);
    std::fwrite(img.data(), 1, len, out);
    std::fclose(out);
    auto f = File::Open(path);
    ASSERT_FALSE(f.ok()) << len;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(f.status().message()), StartsWith(path + ": "));
  }
  ::unlink(path.c_str());
}

TEST(GgufMalformed, BadMagic) {
  std::vector<uint8_t> img = base_image();
  img[0] = 'X';
  expect_error(img, "bad magic", 0);
}

TEST(GgufMalformed, BadVersion) {
  std::vector<uint8_t> img = base_image();
  put_u32(img, 4, 1);
  expect_error(img, "GGUF version 1 is not supported", 4);
  put_u32(img, 4, 4);
  expect_error(img, "unsupported GGUF version 4", 4);
  put_u32(img, 4, 0x03000000);
  expect_error(img, "big-endian", 4);
  put_u32(img, 4, 2);  // v2 has the same layout as v3
  EXPECT_TRUE(parse(img).ok());
}

TEST(GgufMalformed, AbsurdCounts) {
  for (uint64_t n : {kMax64, uint64_t{1} << 62, uint64_t{1} << 32, uint64_t{100000}}) {
    std::vector<uint8_t> img = base_image();
    put_u64(img, 8, n);
    expect_error(img, "tensor count " + std::to_string(n), 8);
    img = base_image();
    put_u64(img, 16, n);
    expect_error(img, "key/value count " + std::to_string(n), 16);
  }
  // Individually plausible, together too many for the bytes left.
  std::vector<uint8_t> img = base_image();
  uint64_t left = img.size() - 24;
  put_u64(img, 8, left / 32);
  put_u64(img, 16, left / 13);
  expect_error(img, "cannot fit");
  // More key/values than there are: runs off the end into the tensor infos.
  img = base_image();
  put_u64(img, 16, get_u64(img, 16) + 1);
  EXPECT_FALSE(parse(img).ok());
}

TEST(GgufMalformed, StringLengths) {
  std::vector<uint8_t> img = base_image();
  KeyAt k = key_at(img, "test.key1");
  for (uint64_t len : {kMax64, kMax64 - 7, uint64_t{1} << 40, uint64_t{img.size()}}) {
    std::vector<uint8_t> bad = img;
    put_u64(bad, k.len, len);
    expect_error(bad, "string length " + std::to_string(len), static_cast<int64_t>(k.len));
  }
  // A value string running past the end of the file.
  KeyAt s = key_at(img, "test.key2");
  std::vector<uint8_t> bad = img;
  put_u64(bad, s.value, img.size() - s.value - 8 + 1);
  expect_error(bad, "value of key 'test.key2': string length", static_cast<int64_t>(s.value));
  // A shorter string length desynchronizes the parse: still an error, never a crash.
  bad = img;
  put_u64(bad, s.value, 2);
  EXPECT_FALSE(parse(bad).ok());
  // A tensor name that is too long.
  TensorAt t = tensor_at(img, "tensor.alpha", 2);
  bad = img;
  put_u64(bad, t.len, kMax64 / 2);
  expect_error(bad, "name of tensor 0: string length", static_cast<int64_t>(t.len));
}

TEST(GgufMalformed, UnknownValueType) {
  std::vector<uint8_t> img = base_image();
  KeyAt k = key_at(img, "test.key1");
  for (uint32_t t : {13u, 100u, 0xFFFFFFFFu}) {
    std::vector<uint8_t> bad = img;
    put_u32(bad, k.type, t);
    expect_error(bad, "key 'test.key1' has unknown value type " + std::to_string(t),
                 static_cast<int64_t>(k.type));
  }
}

TEST(GgufMalformed, BadArrays) {
  std::vector<uint8_t> img = base_image();
  KeyAt k = key_at(img, "test.arr");
  std::vector<uint8_t> bad = img;
  put_u32(bad, k.value, 77);  // element type
  expect_error(bad, "key 'test.arr' is an array of unknown value type 77",
               static_cast<int64_t>(k.value));
  for (uint64_t n : {kMax64, uint64_t{1} << 61, uint64_t{1000000}}) {
    bad = img;
    put_u64(bad, k.value + 4, n);
    expect_error(bad, "key 'test.arr' has an array of " + std::to_string(n) + " i32 elements",
                 static_cast<int64_t>(k.value + 4));
  }
  // Strings as elements: a count of 3 strings reads the ints as lengths.
  bad = img;
  put_u32(bad, k.value, static_cast<uint32_t>(ValueType::kString));
  EXPECT_FALSE(parse(bad).ok());
}

TEST(GgufMalformed, NestedArrayDepth) {
  // Four levels are fine, five are rejected; built by hand since the writer refuses them.
  auto nested = [](int levels) {
    std::vector<uint8_t> img(24);
    put_u32(img, 0, kMagic);
    put_u32(img, 4, 3);
    put_u64(img, 8, 0);
    put_u64(img, 16, 1);
    auto app32 = [&](uint32_t v) {
      img.resize(img.size() + 4);
      put_u32(img, img.size() - 4, v);
    };
    auto app64 = [&](uint64_t v) {
      img.resize(img.size() + 8);
      put_u64(img, img.size() - 8, v);
    };
    app64(4);
    img.insert(img.end(), {'d', 'e', 'e', 'p'});
    app32(9);  // array
    for (int i = 0; i < levels - 1; ++i) {
      app32(9);
      app64(1);
    }
    app32(0);  // innermost: u8 x 1
    app64(1);
    img.push_back(42);
    return img;
  };
  auto ok = File::Parse(nested(4), kName);
  ASSERT_TRUE(ok.ok()) << ok.status();
  expect_error(nested(5), "key 'deep' nests arrays deeper than 4 levels");
  expect_error(nested(1000), "deeper than 4 levels");
}

TEST(GgufMalformed, BadBool) {
  std::vector<uint8_t> img = base_image();
  KeyAt k = key_at(img, "test.flag");
  img[k.value] = 2;
  expect_error(img, "key 'test.flag' has bool value 2", static_cast<int64_t>(k.value));
}

TEST(GgufMalformed, UnknownTensorType) {
  std::vector<uint8_t> img = base_image();
  TensorAt t = tensor_at(img, "tensor.bravo", 2);
  for (uint32_t type : {4u, 5u, 40u, 0xFFFFFFFFu}) {
    std::vector<uint8_t> bad = img;
    put_u32(bad, t.type, type);
    expect_error(bad, "tensor 'tensor.bravo' has unknown type " + std::to_string(type),
                 static_cast<int64_t>(t.type));
  }
}

TEST(GgufMalformed, BadDims) {
  std::vector<uint8_t> img = base_image();
  TensorAt t = tensor_at(img, "tensor.alpha", 2);
  for (uint32_t n : {0u, 5u, 0xFFFFFFFFu}) {
    std::vector<uint8_t> bad = img;
    put_u32(bad, t.n_dims, n);
    expect_error(bad, "tensor 'tensor.alpha' has n_dims " + std::to_string(n) + " (must be 1..4)",
                 static_cast<int64_t>(t.n_dims));
  }
  std::vector<uint8_t> bad = img;
  put_u64(bad, t.dims, kMax64);  // negative as int64
  expect_error(bad, "tensor 'tensor.alpha' dimension 0 is", static_cast<int64_t>(t.dims));
  bad = img;
  put_u64(bad, t.dims, uint64_t{1} << 40);
  put_u64(bad, t.dims + 8, uint64_t{1} << 40);
  expect_error(bad, "overflow");
  bad = img;
  put_u64(bad, t.dims, uint64_t{1} << 40);  // fits, but the data is not in the file
  expect_error(bad, "extends past end of file");
  TensorAt q = tensor_at(img, "tensor.bravo", 2);
  bad = img;
  put_u64(bad, q.dims, 16);
  expect_error(bad,
               "tensor 'tensor.bravo' row length 16 is not a multiple of the q8_0 block size 32");
}

TEST(GgufMalformed, BadOffsets) {
  std::vector<uint8_t> img = base_image();
  TensorAt t = tensor_at(img, "tensor.bravo", 2);
  std::vector<uint8_t> bad = img;
  put_u64(bad, t.offset, get_u64(img, t.offset) + 4);
  expect_error(bad,
               "tensor 'tensor.bravo' offset " + std::to_string(get_u64(img, t.offset) + 4) +
                   " is not a multiple of the alignment 32",
               static_cast<int64_t>(t.offset));
  bad = img;
  put_u64(bad, t.offset, 1 << 20);
  expect_error(bad, "tensor 'tensor.bravo' data [", static_cast<int64_t>(t.len));
  expect_error(bad, "extends past end of file (" + std::to_string(img.size()) + " bytes)");
  bad = img;
  put_u64(bad, t.offset, kMax64 & ~uint64_t{31});
  expect_error(bad, "overflows");
}

TEST(GgufMalformed, OverlappingTensors) {
  std::vector<uint8_t> img = base_image();
  TensorAt t = tensor_at(img, "tensor.bravo", 2);
  put_u64(img, t.offset, 32);  // alpha is [0, 64)
  expect_error(img, "overlaps tensor 'tensor.alpha'");
}

TEST(GgufMalformed, DuplicateTensorName) {
  std::vector<uint8_t> img = base_image();
  TensorAt t = tensor_at(img, "tensor.bravo", 2);
  std::memcpy(&img[t.len + 8], "tensor.alpha", 12);
  expect_error(img, "duplicate tensor name 'tensor.alpha'", static_cast<int64_t>(t.len));
}

TEST(GgufMalformed, DuplicateKey) {
  std::vector<uint8_t> img = base_image();
  KeyAt k = key_at(img, "test.key2");
  std::memcpy(&img[k.len + 8], "test.key1", 9);
  expect_error(img, "duplicate key 'test.key1'", static_cast<int64_t>(k.len));
}

TEST(GgufMalformed, BadAlignment) {
  std::vector<uint8_t> img = base_image();
  KeyAt k = key_at(img, "general.alignment");
  for (uint32_t a : {0u, 3u, 48u}) {
    std::vector<uint8_t> bad = img;
    put_u32(bad, k.value, a);
    expect_error(bad, "general.alignment " + std::to_string(a) + " is not a non-zero power of two",
                 static_cast<int64_t>(k.value));
  }
  std::vector<uint8_t> bad = img;
  put_u32(bad, k.type, static_cast<uint32_t>(ValueType::kInt32));
  expect_error(bad, "general.alignment has type i32, expected u32", static_cast<int64_t>(k.type));
  // A valid but different alignment moves the data section: offsets stay checked.
  bad = img;
  put_u32(bad, k.value, 64);
  EXPECT_FALSE(parse(bad).ok());
}

TEST(GgufMalformed, EveryByteFlipNeverCrashes) {
  // Not a fuzzer, but cheap: every single-byte corruption of the header region.
  std::vector<uint8_t> img = base_image();
  auto f = File::Parse(img, kName);
  ASSERT_TRUE(f.ok());
  for (size_t i = 0; i < f->data_offset(); ++i) {
    for (uint8_t x : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xFF}}) {
      std::vector<uint8_t> bad = img;
      bad[i] ^= x;
      auto r = File::Parse(bad, kName);
      if (!r.ok()) {
        EXPECT_THAT(std::string(r.status().message()), StartsWith("bad.gguf: ")) << i;
        continue;
      }
      for (const TensorInfo& t : r->tensors()) {
        std::vector<uint8_t> dst(t.n_bytes);
        EXPECT_TRUE(r->read_tensor(t, dst.data()).ok());
      }
    }
  }
}

}  // namespace
}  // namespace tandem::gguf
