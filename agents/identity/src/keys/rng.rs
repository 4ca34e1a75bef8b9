//! ring's `SystemRandom` (getrandom(2)) behind the `rand_core` traits that the `rsa` and
//! `p256` crates take, so every random byte of a key comes from the same source rustls uses.

use ring::rand::{SecureRandom, SystemRandom};

/// The kernel's random number generator failed (getrandom(2) returned an error).
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator (getrandom) failed")]
pub struct RngError;

pub(crate) struct SystemRng(SystemRandom);

impl SystemRng {
    pub(crate) fn new() -> SystemRng {
        SystemRng(SystemRandom::new())
    }

    pub(crate) fn fill(&self, dst: &mut [u8]) -> Result<(), RngError> {
        self.0.fill(dst).map_err(|_| RngError)
    }
}

impl rand_core::TryRng for SystemRng {
    type Error = RngError;

    fn try_next_u32(&mut self) -> Result<u32, RngError> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, RngError> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RngError> {
        self.fill(dst)
    }
}

impl rand_core::TryCryptoRng for SystemRng {}
