//! The one error of the template engine, shared by every stage (parse, evaluate, filter, render),
//! so that callers tell a broken tool definition from refused input by variant alone.

/// A template that does not parse, or a value that cannot be used where it is rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{0}")]
    Syntax(String),
    /// The rendered value is refused (a line break in a mail header, `..` as a path segment).
    #[error("{0}")]
    Refused(String),
}
