//! Server ids shown as the names the user gave them: the CLI knows the
//! names (its config file and known servers); the views only ask.

/// Names by server id, as a view asks for them.
pub trait Names {
    /// The name for a server id, if it has one.
    fn name(&self, id: &str) -> Option<&str>;

    /// How a view shows a server: its name, else its id's first 8 digits.
    fn label(&self, id: &str) -> String {
        self.name(id)
            .map_or_else(|| id.chars().take(8).collect(), str::to_owned)
    }
}

/// No names: every server shown by its id.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNames;

impl Names for NoNames {
    fn name(&self, _id: &str) -> Option<&str> {
        None
    }
}

impl Names for std::collections::BTreeMap<String, String> {
    fn name(&self, id: &str) -> Option<&str> {
        self.get(id).map(String::as_str)
    }
}
