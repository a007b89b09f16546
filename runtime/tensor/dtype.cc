#include "runtime/tensor/dtype.h"

#include <array>
#include <cctype>
#include <string>

#include "common/status.h"

namespace tandem {
namespace {

struct Entry {
  uint32_t id;
  DTypeInfo info;
};

// Block sizes and bytes per block from the GGUF specification / ggml.
constexpr std::array kTable = {
    Entry{0, {"f32", 1, 4}},        Entry{1, {"f16", 1, 2}},
    Entry{2, {"q4_0", 32, 18}},     Entry{3, {"q4_1", 32, 20}},
    Entry{6, {"q5_0", 32, 22}},     Entry{7, {"q5_1", 32, 24}},
    Entry{8, {"q8_0", 32, 34}},     Entry{9, {"q8_1", 32, 36}},
    Entry{10, {"q2_k", 256, 84}},   Entry{11, {"q3_k", 256, 110}},
    Entry{12, {"q4_k", 256, 144}},  Entry{13, {"q5_k", 256, 176}},
    Entry{14, {"q6_k", 256, 210}},  Entry{15, {"q8_k", 256, 292}},
    Entry{16, {"iq2_xxs", 256, 66}}, Entry{17, {"iq2_xs", 256, 74}},
    Entry{18, {"iq3_xxs", 256, 98}}, Entry{19, {"iq1_s", 256, 50}},
    Entry{20, {"iq4_nl", 32, 18}},  Entry{21, {"iq3_s", 256, 110}},
    Entry{22, {"iq2_s", 256, 82}},  Entry{23, {"iq4_xs", 256, 136}},
    Entry{24, {"i8", 1, 1}},        Entry{25, {"i16", 1, 2}},
    Entry{26, {"i32", 1, 4}},       Entry{27, {"i64", 1, 8}},
    Entry{28, {"f64", 1, 8}},       Entry{29, {"iq1_m", 256, 56}},
    Entry{30, {"bf16", 1, 2}},      Entry{34, {"tq1_0", 256, 54}},
    Entry{35, {"tq2_0", 256, 66}},  Entry{39, {"mxfp4", 32, 17}},
};

}  // namespace

std::optional<DTypeInfo> dtype_info(uint32_t type) {
  for (const Entry& e : kTable) {
    if (e.id == type) return e.info;
  }
  return std::nullopt;
}

std::string dtype_name(uint32_t type) {
  auto info = dtype_info(type);
  if (info) return std::string(info->name);
  return "type(" + std::to_string(type) + ")";
}

std::optional<DType> dtype_from_name(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const Entry& e : kTable) {
    if (e.info.name == lower) return static_cast<DType>(e.id);
  }
  return std::nullopt;
}

size_t row_bytes(DType type, int64_t n_elements) {
  auto info = dtype_info(type);
  TANDEM_CHECK(info.has_value());
  TANDEM_CHECK(n_elements % info->block_size == 0);
  return static_cast<size_t>(n_elements / info->block_size) * info->block_bytes;
}

}  // namespace tandem
