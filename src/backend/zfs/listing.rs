//! Listings: one `zfs list` of several datasets and their snapshots, and
//! what it says of each volume (its chain, ids and a resumable receive).

use super::*;

/// Parse `zfs list -H -p -o name -t snapshot -s createtxg -d 1 DS`: the
/// snapsite snapshot names of `ds`, oldest first.
pub fn parse_snapshot_list(ds: &str, text: &str) -> Vec<String> {
    let prefix = format!("{ds}@");
    text.lines()
        .filter_map(|l| l.trim_end().strip_prefix(&prefix))
        .filter(|n| is_set_id(n))
        .map(str::to_string)
        .collect()
}

/// What one `zfs list` says of some datasets and their snapshots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetListing {
    /// The listed datasets that exist.
    pub exists: BTreeSet<String>,
    /// `receive_resume_token` of the datasets that have one.
    pub tokens: BTreeMap<String, String>,
    /// Their snapshots in creation order: (dataset, name, guid).
    pub snaps: Vec<(String, String, Option<String>)>,
}

impl DatasetListing {
    pub fn has_snap(&self, ds: &str, name: &str) -> bool {
        self.snaps.iter().any(|(d, n, _)| d == ds && n == name)
    }
    pub fn guid(&self, ds: &str, name: &str) -> Option<&str> {
        self.snaps
            .iter()
            .find(|(d, n, _)| d == ds && n == name)
            .and_then(|(_, _, g)| g.as_deref())
    }
}

/// The columns [`list_datasets`] asks for.
pub(super) const LISTING_ARGS: [&str; 11] = [
    "list",
    "-H",
    "-p",
    "-o",
    "name,guid,receive_resume_token",
    "-t",
    "filesystem,volume,snapshot",
    "-s",
    "createtxg",
    "-d",
    "1",
];

/// Parse `zfs list -H -p -o name,guid,receive_resume_token -t
/// filesystem,volume,snapshot -s createtxg -d 1 DS...`: only lines of the
/// datasets `dss` and of their snapshots count (`-d 1` also shows child
/// datasets).
pub fn parse_dataset_listing(dss: &[String], text: &str) -> DatasetListing {
    let mut out = DatasetListing::default();
    for l in text.lines() {
        let mut f = l.trim_end_matches(['\n', '\r']).split('\t');
        let (Some(name), Some(guid), token) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        match name.split_once('@') {
            Some((ds, snap)) if dss.iter().any(|d| d == ds) => {
                out.snaps
                    .push((ds.to_string(), snap.to_string(), parse_value(guid)))
            }
            None if dss.iter().any(|d| d == name) => {
                out.exists.insert(name.to_string());
                if let Some(t) = token.and_then(parse_value) {
                    out.tokens.insert(name.to_string(), t);
                }
            }
            _ => {}
        }
    }
    out
}

/// Is every line of `zfs list`'s stderr a dataset of `dss` that does not
/// exist (the one failure a listing of several datasets may have)?
pub fn only_missing_datasets(dss: &[String], stderr: &str) -> bool {
    stderr.lines().filter(|l| !l.trim().is_empty()).all(|l| {
        l.trim()
            .strip_prefix("cannot open '")
            .and_then(|r| r.strip_suffix("': dataset does not exist"))
            .is_some_and(|n| dss.iter().any(|d| d == n))
    })
}

/// One `zfs list` of the datasets `dss` (any number, any pools) and their
/// snapshots: which exist, their resume tokens, their snapshots' guids.
/// A dataset that does not exist is simply absent.
pub fn list_datasets(dss: &[String]) -> Result<DatasetListing> {
    if dss.is_empty() {
        return Ok(DatasetListing::default());
    }
    let out = zfs().args(LISTING_ARGS).args(dss).run_raw()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !only_missing_datasets(dss, &stderr) {
        let mut argv: Vec<std::ffi::OsString> = vec!["zfs".into()];
        argv.extend(LISTING_ARGS.iter().map(Into::into));
        argv.extend(dss.iter().map(Into::into));
        return Err(crate::base::cmd::failure(&argv, out.status, &out.stderr));
    }
    Ok(parse_dataset_listing(
        dss,
        &String::from_utf8_lossy(&out.stdout),
    ))
}

/// The datasets a volume's snapshots can be in: `replica` and `source`
/// with a replica configured (see [`chain_in`]), else `source`.
pub(super) fn datasets_of(vol: &Volume) -> Vec<String> {
    match vol.replica() {
        Some(r) if r != vol.source => vec![r, vol.source.clone()],
        Some(r) => vec![r],
        None => vec![dataset(vol).to_string()],
    }
}

/// The volume's part of a listing: its snapsite snapshots, oldest first
/// (creation order), with the full name of each: `replica`'s and, when it
/// exists, the live `source`'s.
pub(super) fn chain_in(vol: &Volume, l: &DatasetListing) -> Vec<(String, String, Option<String>)> {
    let dss: Vec<String> = datasets_of(vol)
        .into_iter()
        .filter(|d| l.exists.contains(d))
        .collect();
    l.snaps
        .iter()
        .filter(|(ds, name, _)| dss.contains(ds) && is_set_id(name))
        .map(|(ds, name, g)| (name.clone(), format!("{ds}@{name}"), g.clone()))
        .collect()
}

/// A volume's [`VolumeListing`] from a listing that covered its datasets.
pub(super) fn volume_listing(vol: &Volume, l: &DatasetListing) -> VolumeListing {
    let mut snapshots = Vec::new();
    let mut ids = BTreeMap::new();
    for (name, full, guid) in chain_in(vol, l) {
        // as `snap_of`: the live source's snapshot when both have one
        let live = full.starts_with(&format!("{}@", vol.source));
        if let Some(g) = guid {
            if live || !ids.contains_key(&name) {
                ids.insert(name.clone(), g);
            }
        }
        snapshots.push(name);
    }
    let resumable = vol
        .replica()
        .and_then(|r| l.tokens.get(&r).cloned())
        .map(|token| Resumable {
            snapshot: None,
            token,
        });
    VolumeListing {
        snapshots,
        ids,
        resumable,
    }
}
