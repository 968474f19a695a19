//! Who may ask what: one pure function from (who asks, what they ask) to allowed or the
//! refusal, so that the whole access table is tested without sockets (docs/ADMIN.md, "Roles").
//!
//! Outside a principal's reach a tenant is reported as not found, so nobody learns what
//! exists elsewhere. Reading documents is the scanners' and tenant administrators' business;
//! an operator or support partner reads one only under an active grant of the tenant and
//! with a stated reason, and the read is audited.

use quire_codecs::wire::{ErrorCode, Role};

/// What is asked, with what the decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Which pages of a job are stored (resume).
    JobStatus,
    /// Push a page.
    PagePut,
    /// Commit a job.
    JobCommit,
    /// Read a job's pages back.
    JobRead,
    TenantCreate,
    /// Issue a credential of this role.
    DeviceCreate(Role),
    /// Enable, disable or revoke a device.
    DeviceState,
    /// Issue a new secret for a device of this role.
    DeviceRotate(Role),
    DeviceList,
    KeyRotate,
    KeyRewrap,
    KeyRetire,
    TenantShred,
    TokenCreate,
    Status,
    GrantCreate,
    GrantRevoke,
    HoldSet,
    HoldRelease,
    DeliveryList,
    /// List a tenant's jobs and their phase (metadata only, no document).
    JobList,
    DeliveryAck,
    JobAbort,
    TlsReload,
    /// Write a backup of the metadata store and the keyring files.
    Backup,
    /// Verify or export a tenant's audit trail (no document content; who did what).
    AuditRead,
}

impl Action {
    /// Every action, for tables and tests.
    pub const ALL: [Action; 28] = [
        Action::JobStatus,
        Action::PagePut,
        Action::JobCommit,
        Action::JobRead,
        Action::TenantCreate,
        Action::DeviceCreate(Role::Device),
        Action::DeviceCreate(Role::ServiceAdmin),
        Action::DeviceState,
        Action::DeviceRotate(Role::Device),
        Action::DeviceRotate(Role::ServiceAdmin),
        Action::DeviceList,
        Action::KeyRotate,
        Action::KeyRewrap,
        Action::KeyRetire,
        Action::TenantShred,
        Action::TokenCreate,
        Action::Status,
        Action::GrantCreate,
        Action::GrantRevoke,
        Action::HoldSet,
        Action::HoldRelease,
        Action::DeliveryList,
        Action::JobList,
        Action::DeliveryAck,
        Action::JobAbort,
        Action::TlsReload,
        Action::Backup,
        Action::AuditRead,
    ];

    fn is_data_plane(self) -> bool {
        matches!(
            self,
            Action::JobStatus | Action::PagePut | Action::JobCommit | Action::JobRead
        )
    }
}

/// Who asks, relative to the tenant the request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject {
    pub role: Role,
    /// The request names the principal's own tenant.
    pub own_tenant: bool,
    /// The tenant granted this principal access that has not expired.
    pub grant: bool,
    /// The request states a reason.
    pub reason: bool,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// A data request naming another tenant than the connection's.
    TenantMismatch,
    /// The tenant is outside the principal's reach: answered as not found.
    Hidden,
    /// The principal's role cannot do this; `needed` names the role that can.
    Forbidden { needed: &'static str },
    /// Allowed only with a stated reason, and none was given.
    ReasonRequired,
    /// Allowed only under an active grant of the tenant, and there is none.
    GrantRequired,
}

impl Denial {
    /// The wire code of the refusal.
    pub fn code(self) -> ErrorCode {
        match self {
            Denial::TenantMismatch => ErrorCode::TenantMismatch,
            Denial::Hidden => ErrorCode::NotFound,
            Denial::Forbidden { .. } | Denial::ReasonRequired | Denial::GrantRequired => {
                ErrorCode::Forbidden
            }
        }
    }
}

/// What an allowed request must also do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// Go ahead.
    Plain,
    /// Go ahead; the access is by someone outside the tenant's own staff and its reason is
    /// recorded in the audit log.
    WithReason,
}

/// The access table. See the module docs.
pub fn decide(s: Subject, a: Action) -> Result<Allowed, Denial> {
    use Role::*;
    if a.is_data_plane() {
        return data_plane(s, a);
    }
    if s.role == Device {
        return Err(Denial::Forbidden { needed: "admin" });
    }
    let only_service_admin = || {
        if s.role == ServiceAdmin {
            Ok(Allowed::Plain)
        } else {
            Err(Denial::Forbidden {
                needed: "service-admin",
            })
        }
    };
    match a {
        Action::TenantCreate | Action::TenantShred | Action::TlsReload | Action::Backup => {
            only_service_admin()
        }
        Action::DeviceCreate(ServiceAdmin) | Action::DeviceRotate(ServiceAdmin) => {
            manage(s).and_then(|_| only_service_admin())
        }
        Action::DeviceList | Action::JobList | Action::AuditRead if s.role == SupportPartner => {
            Err(Denial::Forbidden { needed: "operator" })
        }
        Action::Status if s.role == SupportPartner && !s.reason => Err(Denial::ReasonRequired),
        Action::DeviceList | Action::JobList | Action::AuditRead | Action::Status => read(s),
        _ => manage(s),
    }
}

fn data_plane(s: Subject, a: Action) -> Result<Allowed, Denial> {
    use Role::*;
    // A support partner belongs to its own company's tenant and reads others' under a grant.
    let reader_from_outside = a == Action::JobRead && s.role == SupportPartner && s.grant;
    if !s.own_tenant && !reader_from_outside {
        return Err(Denial::TenantMismatch);
    }
    match (a, s.role) {
        (Action::PagePut | Action::JobCommit, Device) => Ok(Allowed::Plain),
        (Action::PagePut | Action::JobCommit, _) => Err(Denial::Forbidden { needed: "device" }),
        (Action::JobStatus, Device | TenantAdmin | ServiceAdmin | Operator) => Ok(Allowed::Plain),
        (Action::JobStatus, SupportPartner) => Err(Denial::Forbidden { needed: "device" }),
        (Action::JobRead, Device | TenantAdmin | ServiceAdmin) => Ok(Allowed::Plain),
        (Action::JobRead, Operator | SupportPartner) if !s.grant => Err(Denial::GrantRequired),
        (Action::JobRead, Operator | SupportPartner) if !s.reason => Err(Denial::ReasonRequired),
        (Action::JobRead, Operator | SupportPartner) => Ok(Allowed::WithReason),
        _ => unreachable!("data-plane actions are matched above"),
    }
}

/// Changing a tenant's configuration.
fn manage(s: Subject) -> Result<Allowed, Denial> {
    use Role::*;
    match s.role {
        ServiceAdmin => Ok(Allowed::Plain),
        TenantAdmin if s.own_tenant => Ok(Allowed::Plain),
        Operator if s.own_tenant => Err(Denial::Forbidden {
            needed: "tenant-admin",
        }),
        SupportPartner if s.grant => Err(Denial::Forbidden {
            needed: "tenant-admin",
        }),
        Device => Err(Denial::Forbidden { needed: "admin" }),
        TenantAdmin | Operator | SupportPartner => Err(Denial::Hidden),
    }
}

/// Looking at a tenant's status and devices.
fn read(s: Subject) -> Result<Allowed, Denial> {
    use Role::*;
    match s.role {
        ServiceAdmin => Ok(Allowed::Plain),
        TenantAdmin | Operator if s.own_tenant => Ok(Allowed::Plain),
        SupportPartner if s.grant => Ok(Allowed::WithReason),
        Device => Err(Denial::Forbidden { needed: "admin" }),
        TenantAdmin | Operator | SupportPartner => Err(Denial::Hidden),
    }
}

#[cfg(test)]
mod tests;
