//! The one error type of this crate.

/// What went wrong in a tensor operation.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// A buffer passed to a kernel has the wrong number of elements.
    #[error("{op}: {what} has {got} elements, expected {expected}")]
    Len {
        /// The kernel.
        op: &'static str,
        /// Which argument.
        what: &'static str,
        /// What the shape struct implies.
        expected: usize,
        /// What was passed.
        got: usize,
    },
    /// Shapes that cannot go together (for example a stride that does not divide the input).
    #[error("{op}: {msg}")]
    Shape {
        /// The kernel.
        op: &'static str,
        /// What is inconsistent.
        msg: String,
    },
    /// A device name that cannot be parsed or a device this build does not support.
    #[error("device {name:?}: {why}")]
    Device {
        /// The device as written by the user.
        name: String,
        /// Why it cannot be used.
        why: String,
    },
    /// Operands in places an operation cannot combine (a device tensor where host memory is
    /// read, tensors on two devices).
    #[error("{op}: {why}")]
    Placement {
        /// The operation.
        op: &'static str,
        /// What is where.
        why: String,
    },
    /// A device operation failed (a launch, an allocation, a copy).
    #[error("{op} on {device}: {source}")]
    Kernel {
        /// The operation.
        op: &'static str,
        /// The device's name.
        device: String,
        /// What the device said.
        #[source]
        source: ringsam_kernels::KernelError,
    },
    /// The CUDA device exists but this operation has no CUDA kernel yet.
    #[error("{op}: not implemented on CUDA yet (use --device cpu)")]
    CudaNotImplemented {
        /// The operation that was asked for.
        op: &'static str,
    },
    /// The thread pool could not be configured.
    #[error("thread pool: {0}")]
    Threads(String),
}
