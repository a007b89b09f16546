// libFuzzer target for the GGUF reader: any byte string must parse cleanly or
// fail with a status, and whatever parses must be fully readable and must
// survive a write/re-parse through the Writer.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "runtime/gguf/gguf.h"

namespace {

using tandem::gguf::File;
using tandem::gguf::KeyValue;
using tandem::gguf::TensorInfo;
using tandem::gguf::Writer;

constexpr uint64_t kMaxTensorRead = uint64_t{1} << 20;

void fail(const char* what, const absl::Status& st) {
  std::fprintf(stderr, "gguf_fuzz: %s: %s\n", what, st.ToString().c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parsed = File::Parse(std::span<const uint8_t>(data, size), "fuzz.gguf");
  if (!parsed.ok()) {
    if (parsed.status().message().find("fuzz.gguf: ") != 0) fail("unnamed error", parsed.status());
    return 0;
  }
  const File& f = *parsed;

  // Every getter on every key must return a value or a status.
  for (const KeyValue& kv : f.metadata()) {
    (void)f.get_u32(kv.key);
    (void)f.get_u64(kv.key);
    (void)f.get_i64(kv.key);
    (void)f.get_f32(kv.key);
    (void)f.get_bool(kv.key);
    (void)f.get_string(kv.key);
    (void)f.get_string_array(kv.key);
    (void)f.get_f32_array(kv.key);
    (void)f.get_i32_array(kv.key);
  }

  // The parser promised every tensor lies inside the file.
  std::vector<uint8_t> buffer;
  Writer w;
  for (const TensorInfo& t : f.tensors()) {
    if (t.file_offset + t.n_bytes > size) fail("tensor past end", absl::OkStatus());
    if (f.find_tensor(t.name) != &t) fail("find_tensor", absl::OkStatus());
    if (t.n_bytes > kMaxTensorRead) continue;
    buffer.resize(t.n_bytes);
    absl::Status st = f.read_tensor(t, buffer.data());
    if (!st.ok()) fail("read_tensor", st);
    w.add_tensor(t.name, t.dims, t.type, buffer);
  }

  // What the reader accepts, the writer must write and the reader re-read.
  for (const KeyValue& kv : f.metadata()) w.set(kv.key, kv.value);
  auto image = w.write_to_memory();
  if (!image.ok()) fail("rewrite", image.status());
  auto again = File::Parse(*image, "rewritten.gguf");
  if (!again.ok()) fail("re-parse", again.status());
  if (again->metadata().size() != f.metadata().size()) fail("metadata size", absl::OkStatus());
  return 0;
}
