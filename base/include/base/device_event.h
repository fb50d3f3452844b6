// The readiness primitive between compute and communication, on the lowest
// floor so that model/ (which records events) and comm/ (which waits on
// them) share it without depending on each other.
//
// Contract of gradient readiness (DESIGN.md): Gpt::Backward records an event
// after it has enqueued the kernels that make a range of gradients final and
// hands it to its GradsReadyFn; whoever reads those gradients (the
// GradientBucketer, before it starts a bucket's allreduce) waits on the event
// first. "Ready" means computed on the device, not merely queued. On the CPU
// every op has completed when it returns, so waiting is a no-op; a CUDA
// implementation waits on the host (HostWait) or makes its own stream wait
// on native_handle().
#ifndef DROPK_BASE_DEVICE_EVENT_H_
#define DROPK_BASE_DEVICE_EVENT_H_

namespace dropk {

// A point in a Kernels object's queue of work: the readiness primitive.
// Record() marks everything enqueued on the device so far; the work is
// "ready" once all of it has completed on the device, not merely been queued.
// HostWait() blocks the calling thread (any thread) until then. On the CPU,
// every op has completed when it returns, so both are no-ops; on CUDA the
// event is a cudaEvent_t recorded on the compute stream, and native_handle()
// returns it so a communicator can make its own stream wait on it without
// blocking the host. Record() must be called from the thread that drives
// the Kernels; HostWait() may be called from any thread after Record().
// Both throw DeviceError (device_error.h) when the device fails; a caller
// on a thread of its own must catch it there.
class DeviceEvent {
 public:
  virtual ~DeviceEvent() = default;
  virtual void Record() = 0;
  virtual void HostWait() = 0;
  virtual void* native_handle() = 0;  // cudaEvent_t on CUDA, nullptr on the CPU
};

}  // namespace dropk

#endif  // DROPK_BASE_DEVICE_EVENT_H_
