#include "runtime/kernels/cpu/matmul.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/status.h"
#include "runtime/kernels/cpu/convert.h"
#include "runtime/kernels/cpu/matmul_kernels.h"

#if defined(TANDEM_KERNELS_X86)
#include <cpuid.h>
#endif

namespace tandem::kernels {
namespace {

using internal::KernelTable;
using internal::MatmulArgs;
using internal::TypeKernels;

struct CpuFlags {
  bool avx2 = false;    // with FMA, F16C and OS support for the ymm state
  bool avx512 = false;  // F, BW, VL and OS support for the zmm state
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
};

#if defined(TANDEM_KERNELS_X86)
uint64_t read_xcr0() {
  uint32_t eax = 0;
  uint32_t edx = 0;
  // xgetbv by hand: the intrinsic would need -mxsave on this common file.
  asm volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFlags detect_cpu() {
  CpuFlags f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool fma = (c >> 12) & 1;
  const bool osxsave = (c >> 27) & 1;
  const bool avx = (c >> 28) & 1;
  const bool f16c = (c >> 29) & 1;
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = read_xcr0();
  const bool os_ymm = (xcr0 & 0x6) == 0x6;
  const bool os_zmm = (xcr0 & 0xE6) == 0xE6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool avx2 = (b >> 5) & 1;
  const bool avx512f = (b >> 16) & 1;
  const bool avx512bw = (b >> 30) & 1;
  const bool avx512vl = (b >> 31) & 1;
  const bool vnni = (c >> 11) & 1;
  f.avx2 = os_ymm && avx2 && fma && f16c;
  // The AVX-512 kernels also use AVX2, FMA and F16C instructions.
  f.avx512 = f.avx2 && os_zmm && avx512f && avx512bw && avx512vl;
  f.avx512_vnni = f.avx512 && vnni;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512_bf16 = f.avx512 && ((a >> 5) & 1);
  return f;
}
#else
CpuFlags detect_cpu() { return {}; }
#endif

const CpuFlags& cpu_flags() {
  static const CpuFlags flags = detect_cpu();
  return flags;
}

bool isa_available(Isa isa) {
  switch (isa) {
    case Isa::kPortable:
      return true;
    case Isa::kAvx2:
      return cpu_flags().avx2;
    case Isa::kAvx512:
      return cpu_flags().avx512;
    case Isa::kNeon:
#if defined(TANDEM_KERNELS_NEON)
      return true;
#else
      return false;
#endif
  }
  return false;
}

const KernelTable& table_for(Isa isa) {
  TANDEM_CHECK(isa_available(isa));
  switch (isa) {
#if defined(TANDEM_KERNELS_X86)
    case Isa::kAvx2:
      return internal::avx2_kernels();
    case Isa::kAvx512:
      return internal::avx512_kernels(cpu_flags().avx512_vnni, cpu_flags().avx512_bf16);
#endif
#if defined(TANDEM_KERNELS_NEON)
    case Isa::kNeon:
      return internal::neon_kernels();
#endif
    default:
      return internal::portable_kernels();
  }
}

const TypeKernels& select(const KernelTable& t, DType type) {
  switch (type) {
    case DType::kF32:
      return t.f32;
    case DType::kF16:
      return t.f16;
    case DType::kBF16:
      return t.bf16;
    case DType::kQ8_0:
      return t.q8_0;
    case DType::kQ4_0:
      return t.q4_0;
    case DType::kQ4_1:
      return t.q4_1;
    case DType::kQ5_0:
      return t.q5_0;
    case DType::kQ4_K:
      return t.q4_k;
    case DType::kQ5_K:
      return t.q5_k;
    case DType::kQ6_K:
      return t.q6_k;
    default:
      TANDEM_CHECK(kernels_support(type));
      return t.f32;
  }
}

internal::ConvertRow portable_convert(DType weight_type) {
  switch (weight_type) {
    case DType::kF16:
      return internal::convert_row_f16_rounded;
    case DType::kBF16:
      return internal::convert_row_bf16;
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
      return internal::convert_row_q8_0;
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return internal::convert_row_q8_k;
    default:
      return nullptr;
  }
}

Isa compute_best_isa() {
  Isa best = Isa::kPortable;
  for (Isa isa : {Isa::kNeon, Isa::kAvx2, Isa::kAvx512}) {
    if (isa_available(isa)) best = isa;
  }
  if (const char* env = std::getenv("TANDEM_ISA"); env != nullptr && *env != '\0') {
    for (Isa isa : {Isa::kPortable, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
      if (isa_name(isa) != env) continue;
      if (isa_available(isa) && static_cast<int>(isa) <= static_cast<int>(best)) return isa;
    }
    std::fprintf(stderr,
                 "tandem: TANDEM_ISA=%s is not available here (or not lower than %s); using %s\n",
                 env, std::string(isa_name(best)).c_str(), std::string(isa_name(best)).c_str());
  }
  return best;
}

// Below this many activation values the conversion runs on the caller: waking
// the workers would cost more than it saves.
constexpr int64_t kParallelConvertMin = 1 << 16;

// Row chunks per thread of a batch product (see matmul()).
constexpr int64_t kBatchChunksPerThread = 4;

// Fills the BlockSum array of a converted Q8_0 activation row for packed
// weights whose unsigned form carries `offset`.
void write_block_sums(uint8_t* row, int64_t n_cols, int32_t offset) {
  const auto* blocks = reinterpret_cast<const BlockQ8_0*>(row);
  auto* sums =
      reinterpret_cast<internal::BlockSum*>(row + internal::activation_sums_offset(n_cols));
  for (int64_t b = 0; b < n_cols / kQK8_0; ++b) {
    int32_t s = 0;
    for (int j = 0; j < kQK8_0; ++j) s += blocks[b].qs[j];
    sums[b].d = fp16_to_f32(blocks[b].d);
    sums[b].bias = -offset * s;
    sums[b].d_bias = sums[b].d * static_cast<float>(sums[b].bias);
  }
}

}  // namespace

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::kPortable:
      return "portable";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kNeon:
      return "neon";
  }
  return "unknown";
}

Isa best_isa() {
  static const Isa isa = compute_best_isa();
  return isa;
}

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kPortable, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    if (isa_available(isa)) out.push_back(isa);
  }
  return out;
}

DType activation_type(DType weight_type) {
  switch (weight_type) {
    case DType::kQ4_0:
    case DType::kQ5_0:
      return DType::kQ8_0;
    case DType::kQ4_1:
      return DType::kQ8_1;
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return DType::kQ8_K;
    default:
      return weight_type;
  }
}

size_t internal::activation_sums_offset(int64_t n_cols) {
  const size_t blocks = row_bytes(DType::kQ8_0, n_cols);
  return (blocks + 63) / 64 * 64;
}

size_t internal::activation_row_bytes(DType weight_type, int64_t n_cols) {
  switch (weight_type) {
    case DType::kF32:
    case DType::kF16:
      return static_cast<size_t>(n_cols) * sizeof(float);
    case DType::kBF16:
      return static_cast<size_t>(n_cols) * sizeof(uint16_t);
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
      return activation_sums_offset(n_cols) +
             static_cast<size_t>(n_cols / kQK8_0) * sizeof(internal::BlockSum);
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return row_bytes(DType::kQ8_K, n_cols);
    default:
      TANDEM_CHECK(kernels_support(weight_type));
      return 0;
  }
}

internal::ConvertRow internal::activation_converter(Isa isa, DType weight_type) {
  if (weight_type == DType::kF32) return nullptr;
  const TypeKernels& k = select(table_for(isa), weight_type);
  return k.rows != nullptr && k.convert != nullptr ? k.convert : portable_convert(weight_type);
}

bool pack_preferred(DType type, Isa isa) {
  // The portable packed kernel exists for correctness on any ISA, not speed.
  if (!pack_supported(type) || !isa_available(isa) || isa == Isa::kPortable) return false;
  return select(table_for(isa), type).packed_rows != nullptr;
}

size_t matmul_scratch_bytes(DType weight_type, int64_t n_cols, int64_t n_tokens) {
  if (weight_type == DType::kF32) return 0;  // the kernels read x in place
  return internal::activation_row_bytes(weight_type, n_cols) * static_cast<size_t>(n_tokens);
}

void matmul(const Matrix& w, const float* x, int64_t ldx, int64_t n_tokens, float* y, int64_t ldy,
            std::span<uint8_t> scratch, ThreadPool& pool, Isa isa) {
  TANDEM_CHECK(kernels_support(w.type));
  TANDEM_CHECK(w.n_cols % 32 == 0 && w.n_rows >= 0 && n_tokens >= 0);
  TANDEM_CHECK(w.n_cols % dtype_info(w.type)->block_size == 0);
  TANDEM_CHECK(ldx >= w.n_cols && ldy >= w.n_rows);
  if (n_tokens == 0 || w.n_rows == 0) return;

  const KernelTable& table = table_for(isa);
  TypeKernels k = select(table, w.type);
  if (k.rows == nullptr) k = select(internal::portable_kernels(), w.type);
  const bool packed = w.layout == Layout::kPacked;
  internal::RowsKernel rows = k.rows;
  int64_t grain = k.row_grain;
  if (packed) {
    TANDEM_CHECK(pack_supported(w.type));
    rows = k.packed_rows ? k.packed_rows : select(internal::portable_kernels(), w.type).packed_rows;
    grain = kPackRows;
  }

  MatmulArgs args;
  args.w = static_cast<const uint8_t*>(w.data);
  args.w_stride =
      packed ? internal::packed_group_bytes(w.type, w.n_cols) : row_bytes(w.type, w.n_cols);
  args.n_cols = w.n_cols;
  args.n_tokens = n_tokens;
  args.y = y;
  args.ldy = ldy;
  args.x_sums_offset = internal::activation_sums_offset(w.n_cols);
  if (w.type == DType::kF32) {
    args.x = reinterpret_cast<const uint8_t*>(x);
    args.x_stride = static_cast<size_t>(ldx) * sizeof(float);
  } else {
    const size_t stride = internal::activation_row_bytes(w.type, w.n_cols);
    TANDEM_CHECK(scratch.size() >= stride * static_cast<size_t>(n_tokens));
    const internal::ConvertRow convert = k.convert ? k.convert : portable_convert(w.type);
    // The packed kernels' unsigned weights carry an offset; Q4_1's minimum
    // multiplies the plain sum.
    const bool sums = (packed && (w.type == DType::kQ8_0 || w.type == DType::kQ4_0 ||
                                  w.type == DType::kQ5_0)) ||
                      w.type == DType::kQ4_1;
    const int32_t offset = w.type == DType::kQ8_0   ? 128
                           : w.type == DType::kQ4_0 ? 8
                           : w.type == DType::kQ5_0 ? 16
                                                    : -1;
    uint8_t* dst = scratch.data();
    auto convert_rows = [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        convert(x + t * ldx, dst + t * stride, w.n_cols);
        if (sums) write_block_sums(dst + t * stride, w.n_cols, offset);
      }
    };
    if (n_tokens * w.n_cols >= kParallelConvertMin) {
      pool.parallel_for(n_tokens, 1, convert_rows);
    } else {
      convert_rows(0, n_tokens);
    }
    args.x = dst;
    args.x_stride = stride;
  }
  auto run_rows = [&](int64_t r0, int64_t r1) { rows(args, r0, r1); };
  if (n_tokens == 1) {
    // Decode: one contiguous run of rows per thread, one memory stream each.
    pool.parallel_for(w.n_rows, grain, run_rows);
    return;
  }
  // Batches: a few chunks per thread, taken dynamically, so that a thread
  // delayed by another process does not hold the step (a static half each
  // made two threads barely faster than one on a busy machine).
  const int64_t per_chunk = (w.n_rows + kBatchChunksPerThread * pool.n_threads() - 1) /
                            (kBatchChunksPerThread * pool.n_threads());
  pool.parallel_for_dynamic(w.n_rows, (per_chunk + grain - 1) / grain * grain, run_rows);
}

}  // namespace tandem::kernels
