//! Administrative requests about support grants.

use super::*;

/// Support grants: time-boxed access of a support partner or operator to a tenant.
pub(super) async fn grants(
    state: &State,
    principal: &Principal,
    req: AdminRequest,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    let meta = state.meta.clone();
    match req {
        AdminRequest::GrantCreate {
            tenant,
            partner,
            hours,
            reason,
        } => {
            allow(state, principal, &tenant, Action::GrantCreate, "").await?;
            if reason.trim().is_empty() || hours == 0 || hours > 24 * 90 {
                return Err(Refusal::new(
                    ErrorCode::Malformed,
                    "a grant needs a reason and 1 to 2160 hours",
                ));
            }
            let m = meta.clone();
            let p = partner.clone();
            let rec = blocking(move || m.device(&p)).await?;
            // Support partners of any company, and the tenant's own operators, may be granted.
            let grantable = rec.is_some_and(|r| {
                r.role == Role::SupportPartner || (r.role == Role::Operator && r.tenant == tenant)
            });
            if !grantable {
                return Err(Refusal::new(
                    ErrorCode::NotFound,
                    format!("support partner or operator {partner} not found"),
                ));
            }
            let grant = crate::meta::Grant {
                expires_unix: unix_now() + u64::from(hours) * 3600,
                reason,
                granted_by: principal.device_id.clone(),
            };
            let (t, p) = (tenant.clone(), partner.clone());
            blocking(move || meta.put_grant(&t, &p, &grant)).await?;
            reply(send, &Frame::Done).await
        }
        AdminRequest::GrantRevoke { tenant, partner } => {
            allow(state, principal, &tenant, Action::GrantRevoke, "").await?;
            let (t, p) = (tenant.clone(), partner.clone());
            if !blocking(move || meta.remove_grant(&t, &p)).await? {
                return Err(Refusal::new(
                    ErrorCode::NotFound,
                    format!("no grant for {partner} on tenant {tenant}"),
                ));
            }
            reply(send, &Frame::Done).await
        }
        other => Err(misrouted(&other)),
    }
}
