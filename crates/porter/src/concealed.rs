//! A secret setting of the CLI (task keys, the upstream secret): read like any string, printed
//! as `<concealed>`, so a `{:?}` of the settings never shows it.

/// A secret setting: printed as `<concealed>`, so a `{:?}` of the settings shows no key.
#[derive(Clone)]
pub struct Concealed(String);

impl Concealed {
    pub fn new(text: impl Into<String>) -> Concealed {
        Concealed(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Concealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<concealed>")
    }
}

impl std::str::FromStr for Concealed {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Concealed, Self::Err> {
        Ok(Concealed(text.to_owned()))
    }
}
