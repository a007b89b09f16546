// A non-owning, non-allocating reference to a callable, like absl::FunctionRef
// or llvm::function_ref. The thread pool and the kernels take work as
// FunctionRef so that dispatching a lambda never touches the heap (std::function
// may allocate). The referenced callable must outlive every call made through
// the reference; passing a temporary lambda as an argument is fine because it
// lives until the end of the full expression.
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

namespace tandem::kernels {

template <class Sig>
class FunctionRef;

template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  template <class F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef> &&
           std::is_invocable_r_v<R, F&, Args...>) FunctionRef(F&& f)
  noexcept  // NOLINT(google-explicit-constructor): used like a function type
      : obj_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* obj, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(obj))(std::forward<Args>(args)...);
        }) {}

  R operator()(Args... args) const { return call_(obj_, std::forward<Args>(args)...); }

 private:
  void* obj_;
  R (*call_)(void*, Args...);
};

}  // namespace tandem::kernels
