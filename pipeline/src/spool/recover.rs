//! Crash recovery: what the spool finds on disk at start, re-queued or removed.

use super::*;

impl Spool {
    pub(super) fn recover(&self) -> Result<(), SpoolError> {
        let mut metas = Vec::new();
        let mut bodies = Vec::new();
        let mut max_epoch = self.keys.epochs()?.last().copied();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".meta") {
                metas.push(stem.to_string());
            } else if let Some(stem) = name.strip_suffix(".body") {
                bodies.push(stem.to_string());
            } else if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        let mut epochs: HashMap<u64, Option<Arc<Epoch>>> = HashMap::new();
        let (mut queued, mut unreadable, mut incomplete) = (0u64, 0u64, 0u64);
        let mut max_seq = 0u64;
        for stem in &metas {
            let Some((epoch_id, seq)) = parse_name(stem) else {
                continue;
            };
            max_epoch = max_epoch.max(Some(epoch_id));
            max_seq = max_seq.max(seq + 1);
            let epoch = epochs
                .entry(epoch_id)
                .or_insert_with(|| {
                    self.keys.load(epoch_id).ok().flatten().map(|key| {
                        Arc::new(Epoch {
                            id: epoch_id,
                            key,
                            tracker: EpochTracker::new(),
                            opened: Instant::now(),
                        })
                    })
                })
                .clone();
            let Some(epoch) = epoch else {
                unreadable += 1;
                self.remove_files(stem);
                continue;
            };
            let body = self.dir.join(format!("{stem}.body"));
            let meta = match self.read_meta(&epoch, stem) {
                Ok(m) if body.exists() => m,
                _ => {
                    incomplete += 1;
                    self.remove_files(stem);
                    continue;
                }
            };
            if !epoch.tracker.try_add() {
                unreachable!("recovered epochs are closed only after the scan");
            }
            let reserved = reservation_for(meta.plain_size);
            self.space.add(&meta.tenant, reserved);
            let record = Arc::new(Record {
                name: stem.clone(),
                epoch,
                meta,
                latch: RecordLatch::new(),
                reserved,
                status: watch::channel(Delivery::Queued).0,
                recovered: true,
                since: std::time::Instant::now(),
            });
            self.records
                .lock()
                .expect("spool lock")
                .insert(record.meta.object_key.clone(), record.clone());
            let _ = self.queue.send(record);
            queued += 1;
        }
        for stem in &bodies {
            if !metas.contains(stem) {
                incomplete += 1;
                self.remove_files(stem);
            }
        }
        // Every recovered epoch takes no new records; keys nothing needs go now.
        for (id, epoch) in &epochs {
            if let Some(e) = epoch {
                if e.tracker.close() == Erase::Now {
                    self.keys.destroy(*id)?;
                }
            }
        }
        for id in self.keys.epochs()? {
            if !epochs.get(&id).is_some_and(|e| e.is_some()) {
                self.keys.destroy(id)?;
            }
        }
        self.epochs.lock().expect("spool lock").next_id = max_epoch.map_or(0, |e| e + 1);
        self.next_seq.store(max_seq, Ordering::Relaxed);
        if queued + unreadable + incomplete > 0 {
            info!(
                queued,
                incomplete,
                "spool recovered: records queued for delivery, interrupted writes erased"
            );
        }
        if unreadable > 0 {
            warn!(
                unreadable,
                "spool records whose key is gone (key directory lost, e.g. by a reboot) were erased"
            );
        }
        Ok(())
    }

    pub(super) fn remove_files(&self, stem: &str) {
        // Meta first: a body without its meta is recognised as incomplete and erased.
        let _ = fs::remove_file(self.dir.join(format!("{stem}.meta")));
        let _ = fs::remove_file(self.dir.join(format!("{stem}.body")));
    }

    pub(super) fn read_meta(&self, epoch: &Epoch, stem: &str) -> Result<RecordMeta, SpoolError> {
        let path = self.dir.join(format!("{stem}.meta"));
        let len = fs::metadata(&path).map_err(io(&path))?.len();
        if len > MAX_META_LEN {
            return Err(SpoolError::Corrupt(format!(
                "{} is {len} bytes, more than a commit record can be",
                path.display()
            )));
        }
        let bytes = fs::read(&path).map_err(io(&path))?;
        let object_key = format!("spool/{stem}/meta");
        let (_, plain) = sealed::open_all(&bytes, &object_key, |r| {
            (*r == epoch.kek_ref()).then(|| epoch.key.clone())
        })
        .map_err(|e| SpoolError::Corrupt(format!("{}: {e}", path.display())))?;
        RecordMeta::decode(&plain)
            .map_err(|e| SpoolError::Corrupt(format!("{}: {e}", path.display())))
    }
}

fn parse_name(stem: &str) -> Option<(u64, u64)> {
    let (e, s) = stem.split_once('-')?;
    Some((
        u64::from_str_radix(e, 16).ok()?,
        u64::from_str_radix(s, 16).ok()?,
    ))
}
