//! Pseudo-terminals for the simulated devices on a serial line (the PLC over Modbus RTU, the
//! scanner): the simulator holds the master, the host opens the slave's path as a real serial
//! port with tokio-serial.

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};

/// A pty pair: the master, non-blocking, for the device; the slave's path for the host.
pub(crate) fn open_pty() -> io::Result<(OwnedFd, PathBuf)> {
    let pty = nix::pty::openpty(None, None)?;
    let mut t = tcgetattr(&pty.slave)?;
    // Binary bytes must pass untouched: no echo, no line editing, no CR/LF or XON/XOFF.
    cfmakeraw(&mut t);
    tcsetattr(&pty.slave, SetArg::TCSANOW, &t)?;
    let path = nix::unistd::ttyname(&pty.slave)?;
    let flags = OFlag::from_bits_truncate(fcntl(&pty.master, FcntlArg::F_GETFL)?);
    fcntl(&pty.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    // Our slave fd closes here, so the master reads EIO exactly while no host has it open.
    Ok((pty.master, path))
}
