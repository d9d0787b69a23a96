//! Typed errors of the tensor engine.

/// Everything that can go wrong in the engine. Messages name the op and the shapes involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two operands whose shapes do not fit together.
    #[error("{op}: shape mismatch: {lhs:?} vs {rhs:?}")]
    ShapeMismatch {
        /// The op that was called.
        op: &'static str,
        /// Shape of the first operand.
        lhs: Vec<usize>,
        /// Shape of the second operand.
        rhs: Vec<usize>,
    },
    /// A dimension index outside the tensor's rank.
    #[error("{op}: dim {dim} out of range for a tensor of rank {rank}")]
    DimOutOfRange {
        /// The op that was called.
        op: &'static str,
        /// The dimension asked for.
        dim: isize,
        /// The tensor's rank.
        rank: usize,
    },
    /// Any other invalid argument, with a message that names it.
    #[error("{op}: {msg}")]
    Invalid {
        /// The op that was called.
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// Autograd misuse (backward from a non-scalar, twice through a graph, ...).
    #[error("backward: {0}")]
    Backward(String),
    /// A tensor that a file lacks.
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor {
        /// The file.
        path: String,
        /// The tensor name.
        name: String,
    },
    /// A tensor in a file whose shape differs from the expected one.
    #[error("{path}: tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        /// The file.
        path: String,
        /// The tensor name.
        name: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the file.
        actual: Vec<usize>,
    },
    /// A malformed or unsupported safetensors file.
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// I/O error with the path it happened on.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result alias of the engine.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn invalid<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Invalid {
        op,
        msg: msg.into(),
    })
}
