//! Reading many blobs in order, with decryption and decompression spread
//! over worker threads. Results come back in input order through a window
//! of bounded size, so memory stays at `window` blobs however long the file.

use std::collections::BTreeMap;

use crossbeam_channel::bounded;

use super::error::{Error, Result};
use super::id::Id;
use super::repository::Repository;

pub fn for_each_blob_ordered(
    repo: &Repository,
    ids: &[Id],
    threads: usize,
    mut sink: impl FnMut(Vec<u8>) -> Result<()>,
) -> Result<()> {
    if ids.len() <= 1 || threads <= 1 {
        for id in ids {
            sink(repo.read_blob(id)?)?;
        }
        return Ok(());
    }
    let window = threads * 3;
    std::thread::scope(|s| {
        let (job_tx, job_rx) = bounded::<(usize, Id)>(window);
        let (res_tx, res_rx) = bounded::<(usize, Result<Vec<u8>>)>(window);
        for _ in 0..threads {
            let job_rx = job_rx.clone();
            let res_tx = res_tx.clone();
            s.spawn(move || {
                for (seq, id) in job_rx {
                    if res_tx.send((seq, repo.read_blob(&id))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(res_tx);
        let mut next_submit = 0;
        let mut next_emit = 0;
        let mut held: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        let result = (|| {
            while next_emit < ids.len() {
                while next_submit < ids.len() && next_submit < next_emit + window {
                    job_tx
                        .send((next_submit, ids[next_submit]))
                        .map_err(|_| Error::Invalid("blob reader stopped".into()))?;
                    next_submit += 1;
                }
                while let Some(data) = held.remove(&next_emit) {
                    sink(data)?;
                    next_emit += 1;
                }
                if next_emit >= ids.len() {
                    break;
                }
                if next_emit < next_submit {
                    let (seq, res) = res_rx.recv().map_err(|_| Error::Invalid("blob reader stopped".into()))?;
                    held.insert(seq, res?);
                }
            }
            Ok(())
        })();
        drop(job_tx);
        // Drain so workers exit before the scope joins them.
        for _ in res_rx.iter() {}
        result
    })
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}
