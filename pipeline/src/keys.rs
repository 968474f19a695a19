//! Where each object lives in the store. Keys are deterministic (a retry of the same page
//! targets the same key, so conditional create makes it idempotent) and always under the
//! tenant's own prefix. Identifiers were validated by the codec, so none can contain `/` or
//! start with `.`.

/// Prefix of everything a tenant owns.
pub fn tenant_prefix(tenant: &str) -> String {
    format!("tenants/{tenant}")
}

/// Prefix of one job's objects.
pub fn job_prefix(tenant: &str, job_id: &str) -> String {
    format!("tenants/{tenant}/jobs/{job_id}")
}

/// The sealed page `index` of a job.
pub fn page_key(tenant: &str, job_id: &str, index: u32) -> String {
    format!("tenants/{tenant}/jobs/{job_id}/pages/{index:06}")
}

/// The sealed manifest of a job.
pub fn manifest_key(tenant: &str, job_id: &str) -> String {
    format!("tenants/{tenant}/jobs/{job_id}/manifest")
}

/// Names what a key holds in words a tenant understands ("tenant acme, job j1, page 3"),
/// without the store's layout.
pub fn describe(key: &str) -> String {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["tenants", t, "jobs", j, "pages", n] => {
            let n = n.trim_start_matches('0');
            format!(
                "tenant {t}, job {j}, page {}",
                if n.is_empty() { "0" } else { n }
            )
        }
        ["tenants", t, "jobs", j, "manifest"] => format!("tenant {t}, job {j}, manifest"),
        _ => "an internal object".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_described_without_the_layout() {
        assert_eq!(
            super::describe(&super::page_key("acme", "j1", 12)),
            "tenant acme, job j1, page 12"
        );
        assert_eq!(
            super::describe(&super::page_key("acme", "j1", 0)),
            "tenant acme, job j1, page 0"
        );
        assert_eq!(
            super::describe(&super::manifest_key("acme", "j1")),
            "tenant acme, job j1, manifest"
        );
        assert_eq!(super::describe("spool/x"), "an internal object");
    }

    #[test]
    fn keys_sort_by_page_index() {
        assert!(super::page_key("t", "j", 9) < super::page_key("t", "j", 10));
        assert_eq!(
            super::page_key("t", "j", 3),
            "tenants/t/jobs/j/pages/000003"
        );
    }
}
