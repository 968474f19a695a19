//! The whole access table, cell by cell: every role against every request, in four
//! situations. Flipping any single cell in `decide` fails this test.

use super::*;

const ROLES: [Role; 5] = [
    Role::Device,
    Role::TenantAdmin,
    Role::ServiceAdmin,
    Role::Operator,
    Role::SupportPartner,
];

/// The situations, in the order of the table's columns.
const SITUATIONS: [(bool, bool, bool); 4] = [
    // own tenant, no grant, a reason given
    (true, false, true),
    // another tenant, no grant, a reason given
    (false, false, true),
    // another tenant, an active grant, a reason given
    (false, true, true),
    // own tenant, an active grant, no reason
    (true, true, false),
];

/// One letter per role (device, tenant-admin, service-admin, operator, support-partner):
/// A allowed, R allowed and audited with its reason, M tenant mismatch, H hidden (not
/// found), F forbidden, Q reason required.
const TABLE: [(Action, [&str; 4]); 28] = [
    (Action::JobStatus, ["AAAAF", "MMMMM", "MMMMM", "AAAAF"]),
    (Action::PagePut, ["AFFFF", "MMMMM", "MMMMM", "AFFFF"]),
    (Action::JobCommit, ["AFFFF", "MMMMM", "MMMMM", "AFFFF"]),
    (Action::JobRead, ["AAAFF", "MMMMM", "MMMMR", "AAAQQ"]),
    (Action::TenantCreate, ["FFAFF", "FFAFF", "FFAFF", "FFAFF"]),
    (
        Action::DeviceCreate(Role::Device),
        ["FAAFH", "FHAHH", "FHAHF", "FAAFF"],
    ),
    (
        Action::DeviceCreate(Role::ServiceAdmin),
        ["FFAFH", "FHAHH", "FHAHF", "FFAFF"],
    ),
    (Action::DeviceState, ["FAAFH", "FHAHH", "FHAHF", "FAAFF"]),
    (
        Action::DeviceRotate(Role::Device),
        ["FAAFH", "FHAHH", "FHAHF", "FAAFF"],
    ),
    (
        Action::DeviceRotate(Role::ServiceAdmin),
        ["FFAFH", "FHAHH", "FHAHF", "FFAFF"],
    ),
    (Action::DeviceList, ["FAAAF", "FHAHF", "FHAHF", "FAAAF"]),
    (Action::KeyRotate, ["FAAFH", "FHAHH", "FHAHF", "FAAFF"]),
    (Action::KeyRewrap, ["FAAFH", "FHAHH", "FHAHF", "FAAFF"]),
    (Action::KeyRetire, ["FAAFH", "FHAHH", "FHAHF", "FAAFF"]),
    (Action::TenantShred, ["FFAFF", "FFAFF", "FFAFF", "FFAFF"]),
    (Action::TokenCreate, ["FAAFH", "FHAHH", "FHAHF", "FAAFF"]),
    (Action::Status, ["FAAAH", "FHAHH", "FHAHR", "FAAAQ"]),
    (Action::GrantCreate, ["FAAFH", "FHAHH", "FHAHF", "FAAFF"]),
    (Action::GrantRevoke, ["FAAFH", "FHAHH", "FHAHF", "FAAFF"]),
    (Action::HoldSet, ["FAAFH", "FHAHH", "FHAHF", "FAAFF"]),
    (Action::HoldRelease, ["FAAFH", "FHAHH", "FHAHF", "FAAFF"]),
    (Action::DeliveryList, ["FAAFH", "FHAHH", "FHAHF", "FAAFF"]),
    (Action::JobList, ["FAAAF", "FHAHF", "FHAHF", "FAAAF"]),
    (Action::DeliveryAck, ["FAAFH", "FHAHH", "FHAHF", "FAAFF"]),
    (Action::JobAbort, ["FAAFH", "FHAHH", "FHAHF", "FAAFF"]),
    (Action::TlsReload, ["FFAFF", "FFAFF", "FFAFF", "FFAFF"]),
    (Action::Backup, ["FFAFF", "FFAFF", "FFAFF", "FFAFF"]),
    (Action::AuditRead, ["FAAAF", "FHAHF", "FHAHF", "FAAAF"]),
];

fn letter(r: Result<Allowed, Denial>) -> char {
    match r {
        Ok(Allowed::Plain) => 'A',
        Ok(Allowed::WithReason) => 'R',
        Err(Denial::TenantMismatch) => 'M',
        Err(Denial::Hidden) => 'H',
        Err(Denial::Forbidden { .. } | Denial::GrantRequired) => 'F',
        Err(Denial::ReasonRequired) => 'Q',
    }
}

#[test]
fn every_role_against_every_request() {
    assert_eq!(
        TABLE.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        Action::ALL.to_vec(),
        "the table covers every action, in order"
    );
    let mut wrong = Vec::new();
    for (action, columns) in TABLE {
        for ((own_tenant, grant, reason), expected) in SITUATIONS.into_iter().zip(columns) {
            for (role, want) in ROLES.into_iter().zip(expected.chars()) {
                let got = letter(decide(
                    Subject {
                        role,
                        own_tenant,
                        grant,
                        reason,
                    },
                    action,
                ));
                if got != want {
                    wrong.push(format!(
                        "{action:?} by {} (own tenant {own_tenant}, grant {grant}, reason {reason}): {got}, table says {want}",
                        role.as_str()
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn refusals_carry_the_right_wire_codes() {
    assert_eq!(Denial::Hidden.code(), ErrorCode::NotFound);
    assert_eq!(Denial::TenantMismatch.code(), ErrorCode::TenantMismatch);
    assert_eq!(Denial::ReasonRequired.code(), ErrorCode::Forbidden);
    assert_eq!(Denial::GrantRequired.code(), ErrorCode::Forbidden);
    assert_eq!(
        Denial::Forbidden { needed: "device" }.code(),
        ErrorCode::Forbidden
    );
}
