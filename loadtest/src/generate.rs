//! `--generate SIZE-MIX`: synthetic jobs whose page sizes follow a weighted mix, e.g.
//! `50k:6,500k:3,5m:1` (six of every ten pages 50 kB, three 500 kB, one 5 MB). Pages are
//! pseudo-random bytes behind a JPEG signature, like real scans that do not compress: the
//! pipeline detects them by magic number and skips compression, as it would for photos.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// One size of the mix and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub bytes: u64,
    pub weight: u32,
}

/// Parses `SIZE[:WEIGHT],…` with sizes like `50k`, `5m`, `1g` (powers of 1000) or plain bytes.
pub fn parse_mix(s: &str) -> Result<Vec<Share>> {
    let mut mix = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (size, weight) = part.split_once(':').unwrap_or((part, "1"));
        let size = size.trim().to_ascii_lowercase();
        let (digits, mul) = match size.chars().last() {
            Some('k') => (&size[..size.len() - 1], 1_000),
            Some('m') => (&size[..size.len() - 1], 1_000_000),
            Some('g') => (&size[..size.len() - 1], 1_000_000_000),
            _ => (size.as_str(), 1),
        };
        let n: u64 = digits
            .parse()
            .with_context(|| format!("{part:?}: size must look like 50k, 5m or 1g"))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .with_context(|| format!("{part:?}: weight must be a whole number"))?;
        if n == 0 || weight == 0 {
            bail!("{part:?}: size and weight must be above zero");
        }
        mix.push(Share {
            bytes: n * mul,
            weight,
        });
    }
    if mix.is_empty() {
        bail!("empty size mix {s:?}");
    }
    Ok(mix)
}

/// Writes `jobs` job folders of `pages` pages each under `dir`; returns the bytes written.
pub fn generate(dir: &Path, mix: &[Share], jobs: u32, pages: u32, seed: u64) -> Result<u64> {
    let total_weight: u64 = mix.iter().map(|s| u64::from(s.weight)).sum();
    // Seeded: the same arguments generate the same jobs.
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut written = 0;
    let mut buf = vec![0u8; 1 << 20];
    for j in 0..jobs {
        let job = dir.join(format!("gen-{j:04}"));
        std::fs::create_dir_all(&job).with_context(|| format!("creating {}", job.display()))?;
        for p in 0..pages {
            let mut pick = rng.u64(..total_weight);
            let size = mix
                .iter()
                .find(|s| {
                    let hit = pick < u64::from(s.weight);
                    pick = pick.saturating_sub(u64::from(s.weight));
                    hit
                })
                .expect("pick is below the total weight")
                .bytes;
            let path = job.join(format!("page-{p:04}.jpg"));
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
            let mut left = size;
            let mut first = true;
            while left > 0 {
                rng.fill(&mut buf);
                if first {
                    buf[..3].copy_from_slice(&[0xff, 0xd8, 0xff]);
                    first = false;
                }
                let n = left.min(buf.len() as u64) as usize;
                f.write_all(&buf[..n])?;
                left -= n as u64;
            }
            f.flush()?;
            written += size;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse() {
        assert_eq!(
            parse_mix("50k:6, 500k:3,5m").unwrap(),
            vec![
                Share {
                    bytes: 50_000,
                    weight: 6
                },
                Share {
                    bytes: 500_000,
                    weight: 3
                },
                Share {
                    bytes: 5_000_000,
                    weight: 1
                },
            ]
        );
        for bad in ["", "0k", "5x", "5k:0", "k:1"] {
            assert!(parse_mix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generation_follows_the_mix_and_is_reproducible() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let mix = parse_mix("1k:3,10k:1").unwrap();
        let n = generate(a.path(), &mix, 4, 25, 7).unwrap();
        assert_eq!(generate(b.path(), &mix, 4, 25, 7).unwrap(), n);
        let sizes: Vec<u64> = walk(a.path())
            .iter()
            .map(|p| p.metadata().unwrap().len())
            .collect();
        assert_eq!(sizes.len(), 100);
        let big = sizes.iter().filter(|s| **s == 10_000).count();
        assert!(
            (10..=40).contains(&big),
            "{big} of 100 pages are 10k, expected about 25"
        );
        assert!(sizes.iter().all(|s| *s == 1_000 || *s == 10_000));
        let f = &walk(a.path())[0];
        assert_eq!(
            std::fs::read(f).unwrap(),
            std::fs::read(b.path().join(f.strip_prefix(a.path()).unwrap())).unwrap()
        );
    }

    fn walk(p: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out.sort();
        out
    }
}
