//! What handing work to another thread and back costs on this machine: the
//! calibration for every path that crosses threads (the sandbox API's
//! caller -> owner thread -> caller).
//!
//! On a virtual machine this cost depends on what the other CPUs do: waking
//! a thread on an idle virtual CPU takes the hypervisor's wake-up (tens of
//! microseconds measured here), on a busy one a few microseconds. Measured
//! in the same run as the API, it says how much of the API's round trip is
//! the machine rather than marionette.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

/// A thread that sends back whatever it receives.
pub struct PingPong {
    to_echo: Option<Sender<u64>>,
    from_echo: Receiver<u64>,
    echo: Option<JoinHandle<()>>,
}

impl PingPong {
    /// Starts the echo thread.
    ///
    /// # Panics
    /// When the thread cannot be spawned.
    pub fn new() -> PingPong {
        let (to_echo, inbox) = channel::<u64>();
        let (outbox, from_echo) = channel::<u64>();
        let echo = std::thread::Builder::new()
            .name("bench-echo".into())
            .spawn(move || {
                for v in inbox {
                    if outbox.send(v).is_err() {
                        break;
                    }
                }
            })
            .expect("spawning the echo thread");
        PingPong {
            to_echo: Some(to_echo),
            from_echo,
            echo: Some(echo),
        }
    }

    /// One round trip: `v` to the echo thread and back (both threads park
    /// while they wait, as the sandbox's do).
    pub fn round_trip(&self, v: u64) -> u64 {
        let to_echo = self.to_echo.as_ref().expect("open until dropped");
        to_echo.send(v).expect("the echo thread lives");
        self.from_echo.recv().expect("the echo thread lives")
    }
}

impl Default for PingPong {
    fn default() -> Self {
        PingPong::new()
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        // Closing its inbox ends the echo thread's loop.
        self.to_echo = None;
        if let Some(echo) = self.echo.take() {
            let _ = echo.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_and_stops() {
        let p = PingPong::new();
        assert_eq!(p.round_trip(7), 7);
        drop(p);
    }
}
