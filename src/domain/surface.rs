/// Where an action came from: the surface a person or program used, or hoopbot itself. Recorded
/// with every audit event (its `channel`) and every decision (its `via`), by these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The HTTP API (the CLI's `hoop exec` and `hoop requests` use it too).
    Api,
    /// The agent protocol.
    Agent,
    /// Server-side commands run on the server's machine (`hoop token …`).
    Cli,
    /// hoopbot itself: policy, expiry, lost agents, the demo.
    System,
    /// Slack: buttons, the reject modal, `/hoop` commands.
    Slack,
    /// The web app's pages.
    Web,
}

impl Surface {
    pub const fn as_str(self) -> &'static str {
        match self {
            Surface::Api => "api",
            Surface::Agent => "agent",
            Surface::Cli => "cli",
            Surface::System => "system",
            Surface::Slack => "slack",
            Surface::Web => "web",
        }
    }
}

impl std::fmt::Display for Surface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
