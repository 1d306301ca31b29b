//! `{{placeholder}}` filling for Connection settings: JWT claims and token URLs (from the account)
//! and hosted-form verification URLs (from the form's values). One pass, so a value that itself
//! contains a placeholder is never expanded again; unknown placeholders are kept as they are.

/// Fills each `{{name}}` in `text` for which `value_of(name)` has a value, passed through
/// `escape`. Leftmost placeholders are filled first; other `{{` text is kept.
pub fn fill<'v>(
    text: &str,
    value_of: impl Fn(&str) -> Option<&'v str>,
    escape: impl Fn(&str) -> String,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let filled = after
            .find("}}")
            .and_then(|end| Some((value_of(&after[..end])?, end)));
        match filled {
            Some((value, end)) => {
                out.push_str(&escape(value));
                rest = &after[end + 2..];
            }
            None => {
                out.push('{');
                rest = &rest[start + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The account a JWT is minted for; its fields fill `{{identifier}}`, `{{name}}` and
/// `{{namespace}}` in the Connection's templates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template<'a> {
    /// `spec.identifier` of the ConnectedAccount.
    pub identifier: &'a str,
    /// `metadata.name` of the ConnectedAccount.
    pub name: &'a str,
    /// `metadata.namespace` of the ConnectedAccount.
    pub namespace: &'a str,
}

impl<'a> Template<'a> {
    fn value_of(&self, placeholder: &str) -> Option<&'a str> {
        match placeholder {
            "identifier" => Some(self.identifier),
            "name" => Some(self.name),
            "namespace" => Some(self.namespace),
            _ => None,
        }
    }

    /// `s` with the account's placeholders filled as they are.
    pub fn render(&self, s: &str) -> String {
        fill(s, |p| self.value_of(p), str::to_owned)
    }

    /// [`render`](Self::render) for URLs: the values are percent-encoded so that an identifier
    /// cannot change the URL's path, query or host.
    pub fn render_url(&self, s: &str) -> String {
        fill(s, |p| self.value_of(p), crate::percent::encode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_once_leftmost_first_and_unknown_ones_stay() {
        let values = |p: &str| match p {
            "a" => Some("{{b}}"),
            "b" => Some("B"),
            _ => None,
        };
        assert_eq!(
            fill("{{a}}/{{b}}/{{c}}/{{", values, str::to_owned),
            "{{b}}/B/{{c}}/{{"
        );
        assert_eq!(fill("{{{b}}}", values, str::to_owned), "{B}");
        assert_eq!(fill("x{{b", values, str::to_owned), "x{{b");
    }
}
