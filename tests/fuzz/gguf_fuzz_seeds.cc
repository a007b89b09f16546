// Writes a few small, valid GGUF files into DIR as the fuzzer's seed corpus:
//   gguf_fuzz_seeds DIR
#include <cstdio>
#include <string>
#include <vector>

#include "runtime/gguf/gguf.h"

namespace {

using tandem::DType;
using tandem::gguf::Value;
using tandem::gguf::ValueType;
using tandem::gguf::Writer;

bool save(const Writer& w, const std::string& path) {
  absl::Status st = w.write(path);
  if (!st.ok()) std::fprintf(stderr, "%s\n", st.ToString().c_str());
  return st.ok();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];
  bool ok = true;

  Writer empty;
  ok &= save(empty, dir + "/empty.gguf");

  Writer scalars;
  scalars.set("general.architecture", Value::str("llama"));
  scalars.set("u8", Value::u8(1));
  scalars.set("i8", Value::i8(-1));
  scalars.set("u16", Value::u16(2));
  scalars.set("i16", Value::i16(-2));
  scalars.set("u32", Value::u32(3));
  scalars.set("i32", Value::i32(-3));
  scalars.set("f32", Value::f32(0.5f));
  scalars.set("bool", Value::boolean(true));
  scalars.set("u64", Value::u64(4));
  scalars.set("i64", Value::i64(-4));
  scalars.set("f64", Value::f64(0.25));
  scalars.set("strs", Value::string_array({"<s>", "a", ""}));
  scalars.set("f32s", Value::f32_array({1.0f, 2.0f}));
  scalars.set("i32s", Value::i32_array({1, -1}));
  scalars.set("nested", Value::array(ValueType::kArray,
                                     {Value::i32_array({7}), Value::string_array({"x"})}));
  ok &= save(scalars, dir + "/metadata.gguf");

  Writer model;
  model.set("general.architecture", Value::str("llama"));
  model.set_alignment(16);
  model.set("llama.block_count", Value::u32(1));
  model.add_tensor("token_embd.weight", {4, 2}, DType::kF32, std::vector<uint8_t>(32, 1));
  model.add_tensor("blk.0.attn_norm.weight", {4}, DType::kF16, std::vector<uint8_t>(8, 2));
  model.add_tensor("blk.0.attn_q.weight", {32, 2}, DType::kQ8_0, std::vector<uint8_t>(68, 3));
  model.add_tensor("blk.0.ffn_up.weight", {32, 1, 1, 1}, DType::kQ4_0,
                   std::vector<uint8_t>(18, 4));
  ok &= save(model, dir + "/model.gguf");
  return ok ? 0 : 1;
}
