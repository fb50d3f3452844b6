// A shared library opened on first use (dlopen), not at program start.
//
// CUDA's libraries are large (cuBLASLt alone is over 500 MB): linked the
// ordinary way, every dropk binary would map and relocate them at start
// (measured: 0.66 s instead of 0.05 s for one test binary on a 2-core
// machine), although only runs on a GPU call them. model/cuda/ and comm/
// instead define the few library functions they call as forwarders that
// resolve the real function through a LazyLibrary the first time.
//
// Thread-safe; the library stays loaded for the life of the process.
#ifndef DROPK_BASE_LAZY_LIBRARY_H_
#define DROPK_BASE_LAZY_LIBRARY_H_

#include <dlfcn.h>

#include <initializer_list>
#include <mutex>
#include <string>
#include <vector>

namespace dropk {

class LazyLibrary {
 public:
  // Tries each name (or path) in order on first use.
  LazyLibrary(std::initializer_list<const char*> names) : names_(names) {}

  // The address of `symbol` in the library, or nullptr when the library
  // cannot be loaded or lacks it (error() then says why).
  void* Symbol(const char* symbol) {
    Load();
    if (handle_ == nullptr) return nullptr;
    return dlsym(handle_, symbol);
  }

  // True once loaded; loads on the first call.
  bool Loaded() {
    Load();
    return handle_ != nullptr;
  }

  // Why loading failed: every name tried, with dlerror()'s text.
  const std::string& error() {
    Load();
    return error_;
  }

 private:
  void Load() {
    std::call_once(once_, [this] {
      for (const char* name : names_) {
        if (name == nullptr || *name == '\0') continue;
        handle_ = dlopen(name, RTLD_NOW | RTLD_LOCAL);
        if (handle_ != nullptr) return;
        const char* why = dlerror();
        error_ += (error_.empty() ? "" : "; ") + std::string(why != nullptr ? why : name);
      }
    });
  }

  std::vector<const char*> names_;
  std::once_flag once_;
  void* handle_ = nullptr;
  std::string error_;
};

}  // namespace dropk

// Inside the definition of a library function `name` (declared by the
// library's header): resolves it in `library` (a LazyLibrary&) once, and
// returns `failure` when that is impossible. Then `real` is the function.
#define DROPK_LAZY_FORWARD(library, name, failure) \
  DROPK_LAZY_FORWARD_AS(library, decltype(&name), name, failure)
// The same with the function pointer type spelled out, for a name that C++
// overloads (the library's header adds inline overloads of some functions).
#define DROPK_LAZY_FORWARD_AS(library, Pointer, name, failure)                 \
  static const auto real = reinterpret_cast<Pointer>((library).Symbol(#name)); \
  if (real == nullptr) return failure

#endif  // DROPK_BASE_LAZY_LIBRARY_H_
