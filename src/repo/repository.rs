//! An opened repository: backend, master key, config, and the index.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::backend::{Backend, FileKind};
use super::chunker::{Chunker, GearTables};
use super::crypto::{KdfParams, MasterKey};
use super::error::{Error, Result};
use super::format::blob::{
    decode_blob, named_dictionary, BlobType, Compression, DecoderDictionary, Dictionaries, Dictionary,
};
use super::format::config::Config;
use super::format::index::IndexFile;
use super::format::key::KeyFile;
use super::format::snapshot::Snapshot;
use super::format::tree::Tree;
use super::id::Id;
use super::index::{BlobLocation, MasterIndex};
use super::sysinfo;

pub struct Repository {
    backend: Arc<dyn Backend>,
    key: MasterKey,
    config: Config,
    /// The key file that opened the repository, if a password did.
    key_name: Option<String>,
    /// Opened with an append-only key: nothing may be deleted.
    append_only: bool,
    gear: GearTables,
    index: RwLock<MasterIndex>,
    index_loaded: std::sync::atomic::AtomicBool,
    /// Dictionaries read so far, prepared for decoding.
    dictionaries: Mutex<HashMap<Id, Arc<DecoderDictionary>>>,
}

/// Decoding dictionaries kept at once; a restore of one project uses one
/// per large table.
const DICTIONARY_CACHE: usize = 64;

/// Settings for `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub kdf: KdfParams,
    pub pack_size: u32,
    pub compression_level: i32,
}

/// Readable snapshots (oldest first) and the files that could not be read.
pub type SnapshotListing = (Vec<(Id, Snapshot)>, Vec<(String, Error)>);

pub struct KeyListing {
    pub name: String,
    pub file: KeyFile,
    pub current: bool,
}

impl Repository {
    pub fn init(backend: Arc<dyn Backend>, password: &[u8], opts: &InitOptions) -> Result<Repository> {
        if backend.read(FileKind::Config, "config").is_ok() {
            return Err(Error::AlreadyExists(backend.location()));
        }
        let config = Config::new(opts.pack_size, opts.compression_level);
        config.validate().map_err(|e| Error::Invalid(format!("invalid repository settings: {e}")))?;
        backend.create().map_err(|e| match e {
            super::backend::BackendError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                Error::AlreadyExists(format!("{} ({source})", backend.location()))
            }
            other => other.into(),
        })?;
        let key = MasterKey::generate();
        let keyfile = KeyFile::create(&key, password, opts.kdf, &sysinfo::hostname(), &sysinfo::username(), false)
            .map_err(Error::Invalid)?;
        let bytes = keyfile.encode();
        let key_name = Id::of_bytes(&bytes).to_hex();
        // Key first, config last: a repository is visible only once it can be opened.
        backend.write(FileKind::Key, &key_name, &bytes)?;
        backend.write(FileKind::Config, "config", &config.seal(&key))?;
        Ok(Self::assemble(backend, key, config, Some(key_name), false))
    }

    fn assemble(
        backend: Arc<dyn Backend>,
        key: MasterKey,
        config: Config,
        key_name: Option<String>,
        append_only: bool,
    ) -> Repository {
        let gear = GearTables::derive(key.chunker_secret());
        let backend: Arc<dyn Backend> =
            if append_only { Arc::new(super::backend::AppendOnlyBackend(backend)) } else { backend };
        Repository {
            backend,
            key,
            config,
            key_name,
            append_only,
            gear,
            index: RwLock::new(MasterIndex::new()),
            index_loaded: false.into(),
            dictionaries: Mutex::new(HashMap::new()),
        }
    }

    fn read_config_bytes(backend: &dyn Backend) -> Result<Vec<u8>> {
        backend.read(FileKind::Config, "config").map_err(|e| {
            if e.is_not_found() {
                Error::NoRepository(backend.location())
            } else {
                e.into()
            }
        })
    }

    /// Open with a password: try every key file until one unwraps.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Repository> {
        let config_bytes = Self::read_config_bytes(&*backend)?;
        let keys = backend.list(FileKind::Key)?;
        let mut damaged = Vec::new();
        for k in &keys {
            let bytes = backend.read(FileKind::Key, &k.name)?;
            let file = match KeyFile::decode(&bytes) {
                Ok(f) => f,
                Err(e) => {
                    damaged.push(format!("{}: {e}", k.name));
                    continue;
                }
            };
            let Some(master) = file.unwrap_key(password).map_err(|e| Error::format(format!("key {}", k.name), e))?
            else {
                continue;
            };
            let config = Config::open(&master, &config_bytes).map_err(|e| Error::format("config", e))?;
            return Ok(Self::assemble(backend, master, config, Some(k.name.clone()), file.append_only));
        }
        if keys.is_empty() || damaged.len() == keys.len() {
            return Err(Error::Invalid(format!(
                "no usable key file in {} ({}); open it with the exported master key",
                backend.location(),
                if damaged.is_empty() { "keys/ is empty".to_string() } else { damaged.join("; ") }
            )));
        }
        Err(Error::WrongPassword)
    }

    pub fn open_with_master_key(backend: Arc<dyn Backend>, key: MasterKey) -> Result<Repository> {
        let config_bytes = Self::read_config_bytes(&*backend)?;
        let config = Config::open(&key, &config_bytes).map_err(|_| Error::WrongMasterKey)?;
        Ok(Self::assemble(backend, key, config, None, false))
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }
    pub fn key(&self) -> &MasterKey {
        &self.key
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn current_key_name(&self) -> Option<&str> {
        self.key_name.as_deref()
    }

    pub fn is_append_only(&self) -> bool {
        self.append_only
    }

    /// Refuse, before any work starts, an operation an append-only key may
    /// not do (`what`: "forget snapshots", "prune", …).
    pub fn require_full_access(&self, what: &str) -> Result<()> {
        if self.append_only {
            return Err(Error::AppendOnly(what.to_string()));
        }
        Ok(())
    }

    pub fn chunker(&self, profile: &str) -> Result<Chunker> {
        self.scaled_chunker(profile, 0)
    }

    /// The chunker of `profile` with its sizes multiplied by 4^`scale`.
    pub fn scaled_chunker(&self, profile: &str, scale: u8) -> Result<Chunker> {
        let params = self
            .config
            .chunker
            .get(profile)
            .ok_or_else(|| Error::Invalid(format!("no chunker profile {profile:?} in this repository")))?
            .scaled(scale);
        params
            .validate()
            .map_err(|e| Error::Invalid(format!("chunker profile {profile:?} scaled by 4^{scale}: {e}")))?;
        Ok(Chunker::new(params, self.gear.clone()))
    }

    /// Rewrite the config (e.g. a saved retention policy). Same key, same id.
    pub fn save_config(&mut self, config: Config) -> Result<()> {
        self.require_full_access("change the repository config")?;
        config.validate().map_err(|e| Error::Invalid(e.to_string()))?;
        self.backend.write(FileKind::Config, "config", &config.seal(&self.key))?;
        self.config = config;
        Ok(())
    }

    // ----- index -----

    /// Load every index file (once). Superseded files are skipped; an index
    /// file that cannot be read is an error naming it (see `repair index`).
    pub fn load_index(&self) -> Result<()> {
        match self.load_index_tolerant()?.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Load what can be read and return the index files that could not be.
    pub fn load_index_tolerant(&self) -> Result<Vec<(String, Error)>> {
        if self.index_loaded.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(Vec::new());
        }
        let mut files = Vec::new();
        let mut bad = Vec::new();
        for f in self.backend.list(FileKind::Index)? {
            match parse_name(&f.name).and_then(|id| Ok((id, self.read_index_file(&f.name)?))) {
                Ok(pair) => files.push(pair),
                Err(e) => bad.push((f.name, e)),
            }
        }
        self.install_index(&files);
        Ok(bad)
    }

    /// Make `files` the in-memory index (skipping superseded ones), for
    /// callers that have already read and opened the index files.
    pub fn install_index(&self, files: &[(Id, IndexFile)]) {
        let superseded: std::collections::HashSet<Id> =
            files.iter().flat_map(|(_, f)| f.supersedes.iter().copied()).collect();
        let mut idx = self.index.write().unwrap_or_else(|p| p.into_inner());
        *idx = MasterIndex::new();
        for (name, f) in files {
            if !superseded.contains(name) {
                idx.load_file(f);
            }
        }
        idx.seal_loaded();
        self.index_loaded.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Replace the in-memory index with one the caller built.
    pub fn set_index(&self, index: MasterIndex) {
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = index;
        self.index_loaded.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn read_index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        let mut out = Vec::new();
        for f in self.backend.list(FileKind::Index)? {
            out.push((parse_name(&f.name)?, self.read_index_file(&f.name)?));
        }
        Ok(out)
    }

    pub fn read_index_file(&self, name: &str) -> Result<IndexFile> {
        let bytes = self.backend.read(FileKind::Index, name)?;
        IndexFile::open(&self.key, &bytes).map_err(|e| Error::format(format!("index/{name}"), e))
    }

    pub fn write_index_file(&self, file: &IndexFile) -> Result<(Id, u64)> {
        let bytes = file.seal(&self.key);
        let id = Id::of_bytes(&bytes);
        self.backend.write(FileKind::Index, &id.to_hex(), &bytes)?;
        Ok((id, bytes.len() as u64))
    }

    pub fn index(&self) -> RwLockReadGuard<'_, MasterIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn index_mut(&self) -> RwLockWriteGuard<'_, MasterIndex> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    // ----- blobs and trees -----

    pub fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self.index().get(id).ok_or(Error::MissingBlob(*id))?;
        let stored = self.read_stored(&loc)?;
        self.open_stored(id, &loc, &stored)
    }

    fn read_stored(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        Ok(self.backend.read_range(FileKind::Pack, &loc.pack.to_hex(), loc.offset as u64, loc.length as u64)?)
    }

    fn open_stored(&self, id: &Id, loc: &BlobLocation, stored: &[u8]) -> Result<Vec<u8>> {
        decode_blob(&self.key, loc.blob_type, loc.compression, id, loc.raw_length, stored, self)
            .map_err(|e| Error::format(format!("blob {} in pack {}", id.short(), &loc.pack.to_hex()[..16]), e))
    }

    /// Read blobs that lie back to back in one pack with a single ranged
    /// read, then open each. `run` must be ordered by offset and contiguous.
    pub fn read_blob_run(&self, run: &[(Id, BlobLocation)]) -> Result<Vec<Result<Vec<u8>>>> {
        let (Some((_, first)), Some((_, last))) = (run.first(), run.last()) else { return Ok(Vec::new()) };
        let start = first.offset as u64;
        let end = last.offset as u64 + last.length as u64;
        let pack = first.pack.to_hex();
        let stored = self.backend.read_range(FileKind::Pack, &pack, start, end - start)?;
        Ok(run
            .iter()
            .map(|(id, loc)| {
                let from = (loc.offset as u64 - start) as usize;
                let bytes = stored
                    .get(from..from + loc.length as usize)
                    .ok_or_else(|| Error::Invalid(format!("short read of pack {}", &pack[..16])))?;
                decode_blob(&self.key, loc.blob_type, loc.compression, id, loc.raw_length, bytes, self)
                    .map_err(|e| Error::format(format!("blob {} in pack {}", id.short(), &pack[..16]), e))
            })
            .collect())
    }

    /// The dictionary blob `id` was compressed with, if any.
    pub fn dictionary_of(&self, id: &Id) -> Result<Option<Id>> {
        let loc = self.index().get(id).ok_or(Error::MissingBlob(*id))?;
        if loc.compression != Compression::ZstdDictionary {
            return Ok(None);
        }
        let stored = self.read_stored(&loc)?;
        named_dictionary(&self.key, loc.blob_type, loc.compression, id, &stored)
            .map_err(|e| Error::format(format!("blob {} in pack {}", id.short(), &loc.pack.to_hex()[..16]), e))
    }

    /// The bytes of a stored dictionary. Dictionaries are compressed
    /// without one, so reading one never needs another.
    pub fn read_dictionary(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self.index().get(id).ok_or(Error::MissingBlob(*id))?;
        if loc.blob_type != BlobType::Dictionary || loc.compression == Compression::ZstdDictionary {
            return Err(Error::Invalid(format!("blob {} is not a dictionary", id.short())));
        }
        let stored = self.read_stored(&loc)?;
        self.open_stored(id, &loc, &stored)
    }

    /// A stored dictionary, prepared for compressing more data with it.
    pub fn dictionary(&self, id: &Id) -> Result<Arc<Dictionary>> {
        let bytes = self.read_dictionary(id)?;
        Dictionary::new(*id, &bytes, self.config.compression_level)
            .map(Arc::new)
            .ok_or_else(|| Error::Invalid(format!("blob {} is not a usable dictionary", id.short())))
    }

    pub fn read_tree(&self, id: &Id) -> Result<Tree> {
        let loc = self.index().get(id).ok_or(Error::MissingBlob(*id))?;
        if loc.blob_type != BlobType::Tree {
            return Err(Error::Invalid(format!("blob {} is not a tree", id.short())));
        }
        // Trees of a remote repository are kept, still sealed, in its
        // metadata cache; a copy is used only if it opens and hashes to `id`.
        let cached = self.backend.metadata_cache().map(|dir| dir.join("trees").join(id.to_hex()));
        let from_cache =
            cached.as_ref().and_then(|p| std::fs::read(p).ok()).and_then(|s| self.open_stored(id, &loc, &s).ok());
        let bytes = match from_cache {
            Some(bytes) => bytes,
            None => {
                let stored = self.read_stored(&loc)?;
                let bytes = self.open_stored(id, &loc, &stored)?;
                if let Some(path) = &cached {
                    super::backend::store_cache_file(path, &stored);
                }
                bytes
            }
        };
        Tree::decode(&bytes).map_err(|e| Error::format(format!("tree {}", id.short()), e))
    }

    // ----- snapshots -----

    pub fn write_snapshot(&self, snapshot: &Snapshot) -> Result<Id> {
        let bytes = snapshot.seal(&self.key);
        let id = Id::of_bytes(&bytes);
        self.backend.write(FileKind::Snapshot, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    pub fn read_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let name = id.to_hex();
        let bytes = self.backend.read(FileKind::Snapshot, &name)?;
        Snapshot::open(&self.key, &bytes).map_err(|e| Error::format(format!("snapshots/{name}"), e))
    }

    /// All snapshots, oldest first, plus the ones that could not be read.
    pub fn list_snapshots(&self) -> Result<SnapshotListing> {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for f in self.backend.list(FileKind::Snapshot)? {
            match parse_name(&f.name).and_then(|id| Ok((id, self.read_snapshot(&id)?))) {
                Ok(pair) => ok.push(pair),
                Err(e) => bad.push((f.name, e)),
            }
        }
        ok.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((ok, bad))
    }

    /// Resolve `latest`, a full id, or a unique prefix of at least 6 digits.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            let (mut all, _) = self.list_snapshots()?;
            return all.pop().ok_or_else(|| Error::SnapshotNotFound(spec.into()));
        }
        if spec.len() < 6 || !spec.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "{spec:?} is not a snapshot id: give `latest` or at least 6 hex digits of an id"
            )));
        }
        let spec_lc = spec.to_ascii_lowercase();
        let matches: Vec<String> = self
            .backend
            .list(FileKind::Snapshot)?
            .into_iter()
            .map(|f| f.name)
            .filter(|n| n.starts_with(&spec_lc))
            .collect();
        match matches.as_slice() {
            [] => Err(Error::SnapshotNotFound(spec.into())),
            [one] => {
                let id = parse_name(one)?;
                Ok((id, self.read_snapshot(&id)?))
            }
            _ => Err(Error::AmbiguousSnapshot(spec.into())),
        }
    }

    pub fn delete_snapshot(&self, id: &Id) -> Result<()> {
        self.require_full_access("delete snapshots")?;
        Ok(self.backend.delete(FileKind::Snapshot, &id.to_hex())?)
    }

    // ----- keys -----

    pub fn list_keys(&self) -> Result<Vec<KeyListing>> {
        let mut out = Vec::new();
        for f in self.backend.list(FileKind::Key)? {
            let bytes = self.backend.read(FileKind::Key, &f.name)?;
            let file = KeyFile::decode(&bytes).map_err(|e| Error::format(format!("keys/{}", f.name), e))?;
            out.push(KeyListing { current: self.key_name.as_deref() == Some(&f.name), name: f.name, file });
        }
        out.sort_by_key(|k| k.file.created);
        Ok(out)
    }

    /// Add a key. An append-only key can only add append-only keys.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams, append_only: bool) -> Result<String> {
        if !append_only {
            self.require_full_access("add a full-access key")?;
        }
        let file = KeyFile::create(&self.key, password, kdf, &sysinfo::hostname(), &sysinfo::username(), append_only)
            .map_err(Error::Invalid)?;
        let bytes = file.encode();
        let name = Id::of_bytes(&bytes).to_hex();
        self.backend.write(FileKind::Key, &name, &bytes)?;
        Ok(name)
    }

    /// Remove a key by name or unique prefix. The last key is never removed:
    /// without any, only the exported master key could open the repository.
    pub fn remove_key(&self, spec: &str) -> Result<String> {
        self.require_full_access("remove keys")?;
        let keys = self.list_keys()?;
        let matches: Vec<&KeyListing> = keys.iter().filter(|k| k.name.starts_with(spec)).collect();
        let key = match matches.as_slice() {
            [one] => *one,
            [] => return Err(Error::Invalid(format!("no key matches {spec:?}"))),
            _ => return Err(Error::Invalid(format!("{spec:?} matches more than one key"))),
        };
        if keys.len() == 1 {
            return Err(Error::Invalid("refusing to remove the only key of the repository".into()));
        }
        if key.current {
            return Err(Error::Invalid(
                "refusing to remove the key you opened the repository with; use another password".into(),
            ));
        }
        self.backend.delete(FileKind::Key, &key.name)?;
        Ok(key.name.clone())
    }
}

/// Repository file names are the hex ids of their contents.
pub fn parse_name(name: &str) -> Result<Id> {
    name.parse().map_err(|_| Error::Invalid(format!("unexpected file name {name:?} in the repository")))
}

impl Dictionaries for Repository {
    fn decoder(&self, id: &Id) -> std::result::Result<Arc<DecoderDictionary>, String> {
        if let Some(d) = self.dictionaries.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(d.clone());
        }
        let bytes = self.read_dictionary(id).map_err(|e| e.to_string())?;
        let decoder = Arc::new(DecoderDictionary::new(&bytes).ok_or("zstd cannot use it as a dictionary")?);
        let mut cache = self.dictionaries.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= DICTIONARY_CACHE {
            cache.clear();
        }
        cache.insert(*id, decoder.clone());
        Ok(decoder)
    }
}
