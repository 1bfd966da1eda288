//! A standby in process: `serve` on a socket pair with the in-memory store,
//! and the protocol builders the in-process tests share (tests/serve_protocol.rs,
//! tests/order.rs). Real storage is proven elsewhere; this is the fast layer
//! over the protocol logic.

use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

use snapsite::backend::mem::MemStore;
use snapsite::base::catalog::Catalog;
use snapsite::base::config::Config;
use snapsite::base::model::{Manifest, Member};
use snapsite::wire::stream::{Deadline, Msg, PROTOCOL_VERSION, Reader, Writer};

/// A standby site: its config (btrfs volumes of `roles`, never touched) in a
/// temp dir, and the in-memory store its `serve` receives into.
pub struct MemSite {
    pub dir: tempfile::TempDir,
    pub cfg: Config,
    pub store: MemStore,
}

/// The primary's end of one `serve` session.
pub struct Session {
    pub w: Writer<UnixStream>,
    pub r: Reader<UnixStream>,
    pub serve: JoinHandle<snapsite::Result<()>>,
}

impl MemSite {
    pub fn new(roles: &[&str]) -> MemSite {
        let dir = tempfile::tempdir().unwrap();
        let text = super::sitetoml::volumes_toml("standby", dir.path(), roles, "snap", None);
        let cfg = Config::parse(&text, &dir.path().join("standby.toml")).unwrap();
        MemSite {
            dir,
            cfg,
            store: MemStore::new(),
        }
    }

    pub fn catalog(&self) -> Catalog {
        Catalog::new(&self.cfg.state_dir)
    }

    /// Start serve in a thread on one end of a socket pair (giving up
    /// after `idle` without progress, if given); the primary's end.
    pub fn serve_thread(
        &self,
        idle: Option<Duration>,
    ) -> (UnixStream, JoinHandle<snapsite::Result<()>>) {
        let (client, server) = UnixStream::pair().unwrap();
        let cfg = self.cfg.clone();
        let store = self.store.clone();
        let serve = std::thread::spawn(move || {
            let input = Deadline::new(server.try_clone().unwrap(), idle, "the primary");
            let output = Deadline::new(server, idle, "the primary");
            snapsite::standby::serve::serve_with(&cfg, &move |_| Ok(store.backend()), input, output)
        });
        (client, serve)
    }

    /// Start serve in a thread; the client end is returned after the magic.
    pub fn connect(&self, idle: Option<Duration>) -> Session {
        let (client, serve) = self.serve_thread(idle);
        let mut w = Writer::new(client.try_clone().unwrap());
        let r = Reader::new(client);
        w.magic().unwrap();
        Session { w, r, serve }
    }

    /// A session after the handshake, and the standby's answer to the hello.
    pub fn hello(&self) -> (Session, Msg) {
        let mut s = self.connect(None);
        s.r.magic().unwrap();
        s.w.msg(&hello("primary")).unwrap();
        let welcome = s.r.msg().unwrap();
        (s, welcome)
    }

    /// The ids of the sets committed here, in the catalog's order.
    pub fn manifests(&self) -> Vec<String> {
        self.catalog()
            .manifests()
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect()
    }

    pub fn lock_is_free(&self) -> bool {
        self.catalog().lock("test", Duration::ZERO).is_ok()
    }
}

impl Session {
    /// One member: Begin, the stream in 7-byte frames, End (with a wrong
    /// checksum unless `trailer_ok`); the standby's answer.
    pub fn send(&mut self, set: &str, role: &str, stream: &[u8], trailer_ok: bool) -> Msg {
        self.w
            .msg(&begin(set, role, Some(&storage_id(stream))))
            .unwrap();
        for c in stream.chunks(7) {
            self.w.data(c).unwrap();
        }
        let mut trailer = end(stream);
        if !trailer_ok {
            trailer = Msg::End {
                bytes: stream.len() as u64,
                blake3: storage_id(b"other"),
            };
        }
        self.w.msg(&trailer).unwrap();
        self.r.msg().unwrap()
    }

    pub fn commit(&mut self, m: &Manifest) -> snapsite::Result<Msg> {
        self.w
            .msg(&Msg::Commit {
                manifest: m.clone(),
            })
            .unwrap();
        self.r.msg()
    }

    pub fn bye(mut self) -> snapsite::Result<()> {
        self.w.msg(&Msg::Bye).unwrap();
        self.serve.join().unwrap()
    }
}

/// The primary's hello, as site `site`.
pub fn hello(site: &str) -> Msg {
    Msg::Hello {
        protocol: PROTOCOL_VERSION,
        site: site.into(),
        version: "test".into(),
        since: None,
    }
}

/// A Begin of snapshot `set` (named after its set) of `role`, not a resume.
pub fn begin(set: &str, role: &str, storage_id: Option<&str>) -> Msg {
    Msg::Begin {
        set_id: set.into(),
        role: role.into(),
        snapshot: set.into(),
        base: None,
        storage_id: storage_id.map(str::to_string),
        resume: false,
    }
}

/// The End that closes `stream`: its length and blake3.
pub fn end(stream: &[u8]) -> Msg {
    Msg::End {
        bytes: stream.len() as u64,
        blake3: blake3::hash(stream).to_hex().to_string(),
    }
}

/// The storage id these tests announce for a stream: its blake3.
pub fn storage_id(stream: &[u8]) -> String {
    blake3::hash(stream).to_hex().to_string()
}

/// Write a handshake on `w`/`r` as site `site`; the standby's answer.
pub fn handshake<W: std::io::Write, R: std::io::Read>(
    w: &mut Writer<W>,
    r: &mut Reader<R>,
    site: &str,
) -> Msg {
    w.magic().unwrap();
    r.magic().unwrap();
    w.msg(&hello(site)).unwrap();
    r.msg().unwrap()
}

/// The stream a member of set `id` carries in these tests.
pub fn payload(id: &str, role: &str) -> Vec<u8> {
    MemStore::stream(id, None, format!("{role} data of {id}").as_bytes())
}

/// A manifest as a primary would send it: `roles` as btrfs members of set
/// `id` (kind from the id), each with the storage id of `stream_of(role)`,
/// claiming sequence number 1 and generation 1 (callers change them).
pub fn manifest(id: &str, roles: &[&str], stream_of: &dyn Fn(&str) -> Vec<u8>) -> Manifest {
    let (t, kind) = snapsite::base::model::parse_set_id(id).unwrap();
    let members = roles
        .iter()
        .map(|r| Member {
            source: format!("/live/{r}"),
            storage_id: Some(storage_id(&stream_of(r))),
            after: t + jiff::SignedDuration::from_millis(5),
            ..Member::plain(r, id, t)
        })
        .collect();
    Manifest::plain(id, kind, "primary", members)
}
