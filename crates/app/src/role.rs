//! What one process runs: every role, or one of them when gateways, admin
//! API and billing are scaled apart over a shared Redis and database.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `paygate serve`: gateway, admin API, usage writer and, on Redis, the
    /// usage-stream consumer.
    All,
    /// `paygate gateway`: the proxy and its usage writer. Its admin listener
    /// serves only `/healthz`, `/readyz` and `/metrics`.
    Gateway,
    /// `paygate admin`: the admin API and the drift gauge; no proxy.
    Admin,
}

impl Role {
    /// The command that runs this role.
    pub fn command(self) -> &'static str {
        match self {
            Role::All => "serve",
            Role::Gateway => "gateway",
            Role::Admin => "admin",
        }
    }

    pub fn proxies(self) -> bool {
        matches!(self, Role::All | Role::Gateway)
    }

    pub fn serves_admin_api(self) -> bool {
        matches!(self, Role::All | Role::Admin)
    }

    /// Whether this process moves the Redis usage stream into the ledger
    /// (one node doing it all; scaled out, `paygate billing run` does).
    pub fn consumes_usage_stream(self) -> bool {
        self == Role::All
    }
}
