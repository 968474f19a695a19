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

#[cfg(test)]
mod tests {
    #[test]
    fn keys_sort_by_page_index() {
        assert!(super::page_key("t", "j", 9) < super::page_key("t", "j", 10));
        assert_eq!(
            super::page_key("t", "j", 3),
            "tenants/t/jobs/j/pages/000003"
        );
    }
}
