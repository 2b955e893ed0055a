//! What `pipe`, the server and a supervisor say to one another, over `SOCK_SEQPACKET`
//! sockets (one message per send, descriptors passed along with it).
//!
//! - `pipe` -> server, one message per command: the encoded [`Request`], with the
//!   command's output file and the supervisor's end of the status channel (and, when the
//!   request is larger than [`INLINE_MAX`], a memfd holding it, the message then being
//!   [`IN_MEMFD`]).
//! - supervisor -> `pipe`, on the status channel, one [`Report`]: `error` when the
//!   command could not start, else `ended` once it and every descendant are gone (the
//!   channel then closes; `pipe` need not wait for that). `pipe` sends nothing there: it
//!   stops a command by shutting the channel for writing (or closing it: it is gone),
//!   which the supervisor sees as the channel's end.

use std::ffi::{OsStr, OsString};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The largest request sent inline; a larger one goes in a memfd.
pub(crate) const INLINE_MAX: usize = 48 * 1024;

/// The longest message the server receives: an inline request, or [`IN_MEMFD`], with room
/// to spare.
pub(crate) const REQUEST_MAX: usize = 64 * 1024;

/// The longest report `pipe` receives (an error message is a line).
pub(crate) const REPORT_MAX: usize = 4096;

/// The message of a request that lies in the memfd passed with it.
pub(crate) const IN_MEMFD: &[u8] = b"memfd";

/// The most descriptors one message carries.
const MAX_FDS: usize = 3;

/// A command to supervise: its arguments (the program first), its folder, and the
/// variables to set on top of the server's environment (which is `pipe`'s, `pipe` never
/// changing its own).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Request {
    /// The program and its arguments; not empty.
    pub argv: Vec<OsString>,
    /// The folder to run it in (`None`: the server's).
    pub dir: Option<PathBuf>,
    /// Variables to set, in order.
    pub env: Vec<(OsString, OsString)>,
}

impl Request {
    /// The request as bytes: NUL-terminated fields, `dir` (empty for none), the number of
    /// arguments, the arguments, then each variable's name and value. Fails when a field
    /// holds a NUL (no program can be given one), or the command is empty.
    pub fn encode(&self) -> std::io::Result<Vec<u8>> {
        if self.argv.is_empty() {
            return Err(std::io::Error::other("the command is empty"));
        }
        let dir = self.dir.as_ref().map(|d| d.as_os_str());
        let count = self.argv.len().to_string();
        let fields = std::iter::once(dir.unwrap_or(OsStr::new("")))
            .chain(std::iter::once(OsStr::new(&count)))
            .chain(self.argv.iter().map(OsString::as_os_str))
            .chain(
                self.env
                    .iter()
                    .flat_map(|(k, v)| [k.as_os_str(), v.as_os_str()]),
            );
        let mut bytes = Vec::new();
        for field in fields {
            if field.as_bytes().contains(&0) {
                return Err(std::io::Error::other(format!(
                    "{} holds a NUL byte",
                    field.to_string_lossy()
                )));
            }
            bytes.extend_from_slice(field.as_bytes());
            bytes.push(0);
        }
        Ok(bytes)
    }

    /// The request [`Request::encode`] made; `None` when `bytes` is not one.
    pub fn decode(bytes: &[u8]) -> Option<Request> {
        let body = bytes.strip_suffix(&[0])?;
        let mut fields = body.split(|b| *b == 0);
        let os = |b: &[u8]| OsString::from_vec(b.to_vec());
        let dir = fields.next()?;
        let dir = (!dir.is_empty()).then(|| PathBuf::from(os(dir)));
        let count: usize = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
        if count == 0 {
            return None;
        }
        let argv = (0..count)
            .map(|_| fields.next().map(os))
            .collect::<Option<Vec<_>>>()?;
        let mut env = Vec::new();
        while let Some(k) = fields.next() {
            env.push((os(k), os(fields.next()?)));
        }
        Some(Request { argv, dir, env })
    }
}

/// What a supervisor reports to `pipe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Report {
    /// The command could not start: why.
    Error(String),
    /// The command ended, with this wait status (as `waitpid` gives it), and every
    /// descendant is gone; or (`survivors`) some could not be killed within 10 s.
    Ended { status: i32, survivors: bool },
}

impl Report {
    /// The report as one message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Report::Error(e) => {
                // Within what `pipe` receives, cut at a character.
                let mut end = e.len().min(REPORT_MAX - 16);
                while !e.is_char_boundary(end) {
                    end -= 1;
                }
                format!("error {}", &e[..end]).into_bytes()
            }
            Report::Ended {
                status,
                survivors: false,
            } => format!("ended {status}").into_bytes(),
            Report::Ended {
                status,
                survivors: true,
            } => format!("ended {status} survivors").into_bytes(),
        }
    }

    /// The report [`Report::encode`] made; `None` when `bytes` is not one.
    pub fn decode(bytes: &[u8]) -> Option<Report> {
        let text = std::str::from_utf8(bytes).ok()?;
        if let Some(e) = text.strip_prefix("error ") {
            return Some(Report::Error(e.to_string()));
        }
        let ended = text.strip_prefix("ended ")?;
        let (status, survivors) = match ended.strip_suffix(" survivors") {
            Some(s) => (s, true),
            None => (ended, false),
        };
        Some(Report::Ended {
            status: status.parse().ok()?,
            survivors,
        })
    }
}

/// Sends `bytes` as one message on `socket`, with `fds` (at most [`MAX_FDS`]).
pub(crate) fn send(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    debug_assert!(fds.len() <= MAX_FDS);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other(
            "too many descriptors for one message",
        ));
    }
    loop {
        match rustix::net::sendmsg(
            socket,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(n) => {
                return Err(std::io::Error::other(format!(
                    "sent {n} of a message's {} bytes",
                    bytes.len()
                )));
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One message received on `socket`: its bytes and the descriptors that came with it
/// (closed on exec). `None` at the end (the other side closed). A message longer than
/// `max` is an error.
pub(crate) fn recv(
    socket: BorrowedFd<'_>,
    max: usize,
) -> std::io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut bytes = vec![0u8; max];
    Ok(recv_into(socket, &mut bytes)?.map(|(n, fds)| {
        bytes.truncate(n);
        (bytes, fds)
    }))
}

/// [`recv`] into `buffer`: the message's length and its descriptors. A message longer
/// than `buffer` is an error.
pub(crate) fn recv_into(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
) -> std::io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(buffer)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(got) => break got,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got.flags.contains(ReturnFlags::TRUNC) || got.flags.contains(ReturnFlags::CTRUNC) {
        return Err(std::io::Error::other("a message was longer than expected"));
    }
    if got.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((got.bytes, fds)))
}

/// A new `SOCK_SEQPACKET` socket pair (both ends closed on exec).
pub(crate) fn socket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A memfd holding `bytes`, for a request too large to send inline.
pub(crate) fn memfd_with(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create("pipe-request", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, bytes)?;
    Ok(file.into())
}

/// The whole content of the memfd `fd` (from its start).
pub(crate) fn read_memfd(fd: impl AsFd) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    // The offset is shared with the writer's descriptor, left at the end.
    let mut file = std::fs::File::from(fd.as_fd().try_clone_to_owned()?);
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(argv: &[&str], dir: Option<&str>, env: &[(&str, &str)]) -> Request {
        Request {
            argv: argv.iter().map(OsString::from).collect(),
            dir: dir.map(PathBuf::from),
            env: env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
        }
    }

    #[test]
    fn a_request_is_nul_separated_fields() {
        let r = request(
            &["sh", "-c", "cat a > b"],
            Some("/w"),
            &[("PIPE_OUT", "/o"), ("E", "")],
        );
        assert_eq!(
            r.encode().unwrap(),
            b"/w\x003\x00sh\x00-c\x00cat a > b\x00PIPE_OUT\x00/o\x00E\x00\x00".to_vec()
        );
        assert_eq!(Request::decode(&r.encode().unwrap()), Some(r));
        let no_dir = request(&["true"], None, &[]);
        assert_eq!(no_dir.encode().unwrap(), b"\x001\x00true\x00".to_vec());
        assert_eq!(Request::decode(&no_dir.encode().unwrap()), Some(no_dir));
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert!(request(&[], None, &[]).encode().is_err());
        assert!(request(&["a\0b"], None, &[]).encode().is_err());
        assert!(request(&["a"], None, &[("K", "v\0")]).encode().is_err());
        for bad in [
            &b""[..],
            b"\x00",
            b"/w\x000\x00",
            b"/w\x002\x00a\x00",
            b"/w\x00x\x00a\x00",
            b"/w\x001\x00a\x00K\x00",
            b"/w\x001\x00a",
        ] {
            assert_eq!(Request::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reports_read_back() {
        for r in [
            Report::Error("No such file or directory (os error 2)".into()),
            Report::Ended {
                status: 9,
                survivors: false,
            },
            Report::Ended {
                status: 256,
                survivors: true,
            },
        ] {
            assert_eq!(Report::decode(&r.encode()), Some(r));
        }
        let long = "é".repeat(REPORT_MAX);
        let Some(Report::Error(cut)) = Report::decode(&Report::Error(long.clone()).encode()) else {
            panic!("an error report");
        };
        assert!(long.starts_with(&cut) && cut.len() <= REPORT_MAX - 16 && cut.len() > 4000);
        assert_eq!(Report::decode(b"ended x"), None);
        assert_eq!(Report::decode(b"ended 1 x"), None);
        assert_eq!(Report::decode(b"hello"), None);
    }

    #[test]
    fn descriptors_travel_with_a_message_and_the_end_is_seen() {
        let (a, b) = socket_pair().unwrap();
        let memfd = memfd_with(b"payload").unwrap();
        send(a.as_fd(), b"one", &[memfd.as_fd()]).unwrap();
        send(a.as_fd(), b"two", &[]).unwrap();
        drop(a);
        let (bytes, fds) = recv(b.as_fd(), REPORT_MAX).unwrap().unwrap();
        assert_eq!((bytes.as_slice(), fds.len()), (&b"one"[..], 1));
        assert_eq!(read_memfd(&fds[0]).unwrap(), b"payload");
        let (bytes, fds) = recv(b.as_fd(), REPORT_MAX).unwrap().unwrap();
        assert_eq!((bytes.as_slice(), fds.len()), (&b"two"[..], 0));
        assert!(recv(b.as_fd(), REPORT_MAX).unwrap().is_none());
    }
}
