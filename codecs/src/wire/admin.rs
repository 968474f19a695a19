//! Administrative requests, declared once.
//!
//! Each operation is one line of the table at the bottom: its number on the wire, its name
//! in the audit log, and its fields with the reader that decodes (and bounds) each. The enum,
//! the encoder, the decoder, the audit description, [`AdminRequest::ALL`] and the text form
//! the command line's `quire admin call ACTION FIELD=VALUE…` parses
//! ([`AdminRequest::from_text`]) follow from that table, so adding an operation touches one
//! list (plus its handler and its policy cell, which the compiler then asks for).

use bytes::{BufMut, BytesMut};

use super::decode::Reader;
use super::encode::put_str;
use super::{DeviceState, Role, WireError, MAX_REASON_LEN};

/// How one field type goes onto the wire (the reader side is named per field in the table,
/// because the same type is bounded differently: a tenant id, a job id, a reason).
trait PutField {
    fn put(&self, out: &mut BytesMut);
    /// The value as the audit log shows it.
    fn show(&self) -> String;
}

/// How one field type is read from its text form (`FIELD=VALUE` on the command line).
trait ParseField: Sized {
    fn parse_text(text: &str) -> Result<Self, String>;
}

impl ParseField for String {
    fn parse_text(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
}

/// Empty or `*` is "none" (the whole tenant), as the audit log shows it.
impl ParseField for Option<String> {
    fn parse_text(text: &str) -> Result<Self, String> {
        Ok(match text {
            "" | "*" => None,
            t => Some(t.to_string()),
        })
    }
}

impl ParseField for u32 {
    fn parse_text(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|_| format!("{text:?} is not a whole number"))
    }
}

impl ParseField for u64 {
    fn parse_text(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|_| format!("{text:?} is not a whole number"))
    }
}

impl ParseField for bool {
    fn parse_text(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|_| format!("{text:?} is neither true nor false"))
    }
}

impl ParseField for Role {
    fn parse_text(text: &str) -> Result<Self, String> {
        Role::parse(text).ok_or_else(|| {
            format!("{text:?}: expected device, tenant-admin, service-admin, operator or support-partner")
        })
    }
}

impl ParseField for DeviceState {
    fn parse_text(text: &str) -> Result<Self, String> {
        [
            DeviceState::Pending,
            DeviceState::Enabled,
            DeviceState::Disabled,
            DeviceState::Revoked,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| format!("{text:?}: expected pending, enabled, disabled or revoked"))
    }
}

impl PutField for String {
    fn put(&self, out: &mut BytesMut) {
        put_str(out, self);
    }
    fn show(&self) -> String {
        self.clone()
    }
}

/// An optional job id travels as a string, empty for "none" (the whole tenant).
impl PutField for Option<String> {
    fn put(&self, out: &mut BytesMut) {
        put_str(out, self.as_deref().unwrap_or(""));
    }
    fn show(&self) -> String {
        self.as_deref().unwrap_or("*").to_string()
    }
}

impl PutField for u32 {
    fn put(&self, out: &mut BytesMut) {
        out.put_u32(*self);
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl PutField for u64 {
    fn put(&self, out: &mut BytesMut) {
        out.put_u64(*self);
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl PutField for bool {
    fn put(&self, out: &mut BytesMut) {
        out.put_u8(*self as u8);
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl PutField for Role {
    fn put(&self, out: &mut BytesMut) {
        out.put_u8(self.to_u8());
    }
    fn show(&self) -> String {
        self.as_str().to_string()
    }
}

impl PutField for DeviceState {
    fn put(&self, out: &mut BytesMut) {
        out.put_u8(self.to_u8());
    }
    fn show(&self) -> String {
        self.as_str().to_string()
    }
}

/// The audit log's name for a field (`device`, `job`: shorter than the Rust names).
fn label(field: &'static str) -> &'static str {
    match field {
        "device_id" => "device",
        "job_id" => "job",
        other => other,
    }
}

/// What the audit log records of an administrative request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminDescription {
    /// The action, e.g. `device.create`.
    pub action: &'static str,
    /// The tenant it concerns; empty when the request names only a device.
    pub tenant: String,
    /// The other fields as `name=value`, separated by spaces.
    pub detail: String,
}

macro_rules! admin_requests {
    ($(
        $(#[$doc:meta])*
        $op:literal $action:literal $name:ident {
            $( $field:ident : $ty:ty = $get:ident ( $($arg:expr),* ) ),* $(,)?
        }
    )*) => {
        /// An administrative request, sent by a credential with an admin role.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum AdminRequest {
            $( $(#[$doc])* $name { $( $field: $ty ),* }, )*
        }

        impl AdminRequest {
            /// Every operation: its number on the wire and its audit action.
            pub const ALL: &'static [(u8, &'static str)] = &[$( ($op, $action) ),*];

            /// Every operation's audit action and the names of its fields, in order.
            pub const FIELDS: &'static [(&'static str, &'static [&'static str])] =
                &[$( ($action, &[$( stringify!($field) ),*]) ),*];

            /// The request named by its audit `action`, its fields given as `(name, text)`
            /// pairs (every field exactly once). What `quire admin call` sends.
            pub fn from_text(action: &str, fields: &[(&str, &str)]) -> Result<AdminRequest, String> {
                let known = Self::FIELDS
                    .iter()
                    .find(|(a, _)| *a == action)
                    .ok_or_else(|| format!("unknown admin operation {action:?}"))?;
                for (name, _) in fields {
                    if !known.1.contains(name) {
                        return Err(format!("{action} has no field {name:?} (it has {:?})", known.1));
                    }
                }
                let value = |name: &str| -> Result<&str, String> {
                    let mut found = fields.iter().filter(|(n, _)| *n == name);
                    match (found.next(), found.next()) {
                        (Some((_, v)), None) => Ok(v),
                        (None, _) => Err(format!("{action} needs {name}=…")),
                        (Some(_), Some(_)) => Err(format!("{name} is given twice")),
                    }
                };
                match action {
                    $( $action => Ok(AdminRequest::$name { $(
                        $field: ParseField::parse_text(value(stringify!($field))?)
                            .map_err(|e| format!("{}: {e}", stringify!($field)))?,
                    )* }), )*
                    _ => unreachable!("found in FIELDS above"),
                }
            }

            /// The operation's number on the wire.
            pub fn op(&self) -> u8 {
                match self { $( AdminRequest::$name { .. } => $op, )* }
            }

            /// What the audit log records of this request.
            pub fn describe(&self) -> AdminDescription {
                match self {
                    $( AdminRequest::$name { $( $field ),* } => {
                        #[allow(unused_mut)] // operations without fields
                        let mut tenant = String::new();
                        #[allow(unused_mut)]
                        let mut detail = Vec::<String>::new();
                        $(
                            if stringify!($field) == "tenant" {
                                tenant = PutField::show($field);
                            } else {
                                detail.push(format!(
                                    "{}={}",
                                    label(stringify!($field)),
                                    PutField::show($field)
                                ));
                            }
                        )*
                        AdminDescription { action: $action, tenant, detail: detail.join(" ") }
                    } )*
                }
            }

            pub(super) fn put(&self, out: &mut BytesMut) {
                out.put_u8(self.op());
                match self {
                    $( AdminRequest::$name { $( $field ),* } => { $( PutField::put($field, out); )* } )*
                }
            }

            pub(super) fn get(r: &mut Reader<'_>) -> Result<AdminRequest, WireError> {
                match r.u8()? {
                    // Struct expressions evaluate their fields in the order written: the
                    // order of the table.
                    $( $op => Ok(AdminRequest::$name { $( $field: r.$get($($arg),*)? ),* }), )*
                    _ => Err(r.err("unknown admin request")),
                }
            }
        }
    };
}

admin_requests! {
    /// Create a tenant (service admin only).
    1 "tenant.create" TenantCreate { tenant: String = id("tenant") }
    /// Issue a new credential of `role` for `tenant`; the device starts disabled unless `enabled`.
    2 "device.create" DeviceCreate {
        tenant: String = id("tenant"),
        device_id: String = id("device id"),
        role: Role = role(),
        enabled: bool = bool(),
    }
    /// Enable, disable or revoke a device.
    3 "device.set-state" DeviceSetState {
        device_id: String = id("device id"),
        state: DeviceState = state(),
    }
    /// List devices of a tenant.
    4 "device.list" DeviceList { tenant: String = id("tenant") }
    /// Add a new key-encryption key version for a tenant.
    5 "key.rotate" KeyRotate { tenant: String = id("tenant") }
    /// Re-wrap every stored data key of a tenant under its newest key version.
    6 "key.rewrap" KeyRewrap { tenant: String = id("tenant") }
    /// Destroy every key of a tenant (crypto-shredding) and revoke its devices.
    7 "tenant.shred" TenantShred { tenant: String = id("tenant") }
    /// Issue a one-time enrollment token for a tenant, valid for `ttl_secs`.
    8 "token.create" TokenCreate { tenant: String = id("tenant"), ttl_secs: u32 = u32() }
    /// Read-only status of a tenant; a support partner states why it looks.
    9 "status" Status { tenant: String = id("tenant"), reason: String = string(MAX_REASON_LEN) }
    /// Let a support partner see a tenant's status for `hours`, for a stated reason.
    10 "grant.create" GrantCreate {
        tenant: String = id("tenant"),
        partner: String = id("device id"),
        hours: u32 = u32(),
        reason: String = string(MAX_REASON_LEN),
    }
    /// Withdraw a support partner's access at once.
    11 "grant.revoke" GrantRevoke { tenant: String = id("tenant"), partner: String = id("device id") }
    /// Issue a new secret for a device; the old one stops working at once.
    12 "device.rotate" DeviceRotate { device_id: String = id("device id") }
    /// Place a legal hold on a whole tenant (`job: None`) or one job: nothing under it is
    /// deleted, by any policy, until the hold is released.
    13 "hold.set" HoldSet {
        tenant: String = id("tenant"),
        job: Option<String> = optional_job_id(),
        reason: String = string(MAX_REASON_LEN),
    }
    /// Release a legal hold.
    14 "hold.release" HoldRelease { tenant: String = id("tenant"), job: Option<String> = optional_job_id() }
    /// The committed jobs of a tenant not yet acknowledged by a delivery consumer.
    15 "delivery.list" DeliveryList { tenant: String = id("tenant") }
    /// A delivery consumer has fetched and verified the job: record it, and apply the
    /// tenant's retention policy (e.g. delete on delivery).
    16 "delivery.ack" DeliveryAck { tenant: String = id("tenant"), job_id: String = job_id() }
    /// Abandon an uncommitted job: its stored pages are deleted and its id is free again.
    17 "job.abort" JobAbort { tenant: String = id("tenant"), job_id: String = job_id() }
    /// Read the server's TLS certificate and key again (a renewal), as SIGHUP does
    /// (service admin only). Connections already open keep theirs.
    18 "tls.reload" TlsReload {}
    /// Destroy an old key version of a tenant; refused while any stored object is under it.
    19 "key.retire" KeyRetire { tenant: String = id("tenant"), version: u32 = u32() }
    /// A tenant's jobs (or one job) and where each is in its life.
    20 "job.list" JobList { tenant: String = id("tenant"), job: Option<String> = optional_job_id() }
    /// Check a tenant's audit chain against its signed checkpoints.
    21 "audit.verify" AuditVerify { tenant: String = id("tenant") }
    /// A tenant's audit trail as JSON lines, from `since_unix_ms` (0: all of it), with the
    /// checkpoints and public keys that prove it.
    22 "audit.export" AuditExport { tenant: String = id("tenant"), since_unix_ms: u64 = u64() }
    /// A committed job's signed manifest, as the JSON document `quire verify` checks.
    23 "manifest.get" ManifestGet {
        tenant: String = id("tenant"),
        job_id: String = job_id(),
        reason: String = string(MAX_REASON_LEN),
    }
    /// A tenant's public manifest signing keys with the periods they signed in, as JSON.
    24 "signing_key.export" SigningKeyExport { tenant: String = id("tenant") }
    /// Read every stored object of a tenant through and report missing, corrupt and orphaned
    /// ones as JSON lines; jobs after `after` only (to go on with a stopped scrub), reading at
    /// most `max_mb_per_s` (0: unbounded).
    25 "scrub" Scrub {
        tenant: String = id("tenant"),
        after: Option<String> = optional_job_id(),
        max_mb_per_s: u32 = u32(),
    }
    /// Back up the node's metadata store, keyring files and audit log to the default store
    /// (service admin only); answered with the backup's index as JSON.
    26 "backup.create" BackupCreate {}
    /// A scrub (as `scrub`) that also replaces every missing or corrupt copy of an object,
    /// in the primary store or a replica, with the stored bytes of a good copy.
    27 "scrub.repair" ScrubRepair {
        tenant: String = id("tenant"),
        after: Option<String> = optional_job_id(),
        max_mb_per_s: u32 = u32(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_numbers_and_actions_are_unique() {
        let mut ops: Vec<u8> = AdminRequest::ALL.iter().map(|(op, _)| *op).collect();
        let mut actions: Vec<&str> = AdminRequest::ALL.iter().map(|(_, a)| *a).collect();
        ops.sort();
        ops.dedup();
        actions.sort();
        actions.dedup();
        assert_eq!(ops.len(), AdminRequest::ALL.len());
        assert_eq!(actions.len(), AdminRequest::ALL.len());
    }

    #[test]
    fn every_operation_has_a_text_form() {
        for (action, fields) in AdminRequest::FIELDS {
            let given: Vec<(&str, &str)> = fields
                .iter()
                .map(|f| {
                    let v = match *f {
                        "role" => "device",
                        "state" => "enabled",
                        "enabled" => "true",
                        "ttl_secs" | "hours" | "version" | "since_unix_ms" | "max_mb_per_s" => "24",
                        _ => "acme",
                    };
                    (*f, v)
                })
                .collect();
            let req = AdminRequest::from_text(action, &given).unwrap();
            assert_eq!(req.describe().action, *action);
        }
        let e = AdminRequest::from_text("job.abort", &[("tenant", "acme")]).unwrap_err();
        assert!(e.contains("needs job_id"), "{e}");
        let e =
            AdminRequest::from_text("job.abort", &[("tenant", "a"), ("job_id", "j"), ("x", "1")])
                .unwrap_err();
        assert!(e.contains("no field \"x\""), "{e}");
        let e = AdminRequest::from_text("token.create", &[("tenant", "a"), ("ttl_secs", "soon")])
            .unwrap_err();
        assert!(e.starts_with("ttl_secs:"), "{e}");
        assert!(AdminRequest::from_text("tenant.drop", &[]).is_err());
    }

    #[test]
    fn the_audit_sees_tenant_and_the_other_fields() {
        let d = AdminRequest::DeviceCreate {
            tenant: "acme".into(),
            device_id: "scanner-1".into(),
            role: Role::Device,
            enabled: true,
        }
        .describe();
        assert_eq!(
            (d.action, d.tenant.as_str(), d.detail.as_str()),
            (
                "device.create",
                "acme",
                "device=scanner-1 role=device enabled=true"
            )
        );
        let d = AdminRequest::HoldSet {
            tenant: "acme".into(),
            job: None,
            reason: "audit 2026".into(),
        }
        .describe();
        assert_eq!(d.detail, "job=* reason=audit 2026");
    }
}
