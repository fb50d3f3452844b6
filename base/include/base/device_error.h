// DeviceError: the one exception type for a failure of the accelerator
// inside an operation that cannot return a Status: a Kernels op (they return
// void), a DeviceEvent, an inference step. On the lowest floor so that
// model/ (which throws it), and trainer/ and sampler/ (which catch it) share
// it without depending on each other.
//
// What it means for the catcher: a CUDA runtime, cuBLAS or NCCL call failed
// mid-operation (out of device memory while the step grew a buffer, an
// illegal address, an Xid or ECC error, a lost GPU). Many CUDA errors are
// "sticky": every later call on the process's CUDA context fails too, and
// the device's memory (parameters, optimizer state, KV caches) can no longer
// be trusted. So whoever catches it must not use the device again: no
// further steps, no checkpoint written from device state (earlier
// checkpoints on disk are unaffected). It ends the work with the message:
// dropk-train ends the job (exit 1); dropk-serve fails the affected requests,
// reports itself unhealthy and exits so that it is restarted.
//
// It is thrown, not returned, because the ops that meet it return void and
// sit deep in the model's forward and backward; it must never be thrown from
// a destructor or across a C callback (those still abort, check.h).
#ifndef DROPK_BASE_DEVICE_ERROR_H_
#define DROPK_BASE_DEVICE_ERROR_H_

#include <stdexcept>
#include <string>

namespace dropk {

class DeviceError : public std::runtime_error {
 public:
  // `operation` names what dropk was doing ("AttentionForward on cuda:0",
  // "cuda inference engine: RowMatmul (qkv)"); `cause` is the library's
  // error as check.h words it: the call, the error's name and text, and
  // file:line. what() is "<operation>: <cause>".
  DeviceError(std::string operation, std::string cause)
      : std::runtime_error(operation + ": " + cause),
        operation_(std::move(operation)),
        cause_(std::move(cause)) {}

  const std::string& operation() const { return operation_; }
  const std::string& cause() const { return cause_; }

 private:
  std::string operation_;
  std::string cause_;
};

}  // namespace dropk

#endif  // DROPK_BASE_DEVICE_ERROR_H_
