//! The services' colours, the same in every chart and legend of the page.

/// Colours for services: the three of this project always the same, any
/// other in order of appearance.
pub(crate) struct Palette {
    others: Vec<String>,
}

const KNOWN: [(&str, &str); 3] = [
    ("core-client", "#4e79a7"),
    ("relay", "#f28e2b"),
    ("exec-server", "#59a14f"),
];
const OTHERS: [&str; 7] = [
    "#b07aa1", "#e15759", "#76b7b2", "#c9a227", "#9c755f", "#ff9da7", "#8c8c8c",
];

impl Palette {
    /// A palette for `services`, in the order given (repeats allowed).
    pub(super) fn new<'a>(services: impl Iterator<Item = &'a str>) -> Palette {
        let mut others: Vec<String> = Vec::new();
        for s in services {
            if !KNOWN.iter().any(|(k, _)| *k == s) && !others.iter().any(|o| o == s) {
                others.push(s.to_owned());
            }
        }
        Palette { others }
    }

    /// The colour of `service`.
    pub(crate) fn colour(&self, service: &str) -> &'static str {
        if let Some((_, c)) = KNOWN.iter().find(|(k, _)| *k == service) {
            return c;
        }
        let i = self.others.iter().position(|o| o == service).unwrap_or(0);
        OTHERS.get(i % OTHERS.len()).copied().unwrap_or("#8c8c8c")
    }

    /// Every service with its colour: the known ones present first.
    pub(super) fn entries<'a>(&'a self, present: &[&'a str]) -> Vec<(&'a str, &'static str)> {
        let mut out: Vec<(&str, &str)> = KNOWN
            .iter()
            .filter(|(k, _)| present.contains(k))
            .map(|(k, c)| (*k, *c))
            .collect();
        out.extend(self.others.iter().map(|o| (o.as_str(), self.colour(o))));
        out
    }
}
