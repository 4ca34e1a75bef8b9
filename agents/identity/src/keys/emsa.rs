//! The RSA signature encodings done in userspace before the kernel's raw private-key
//! operation: EMSA-PSS with SHA-256 and MGF1-SHA-256 (RFC 8017 §9.1.1; TLS 1.3 signs only
//! with PSS) and EMSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §9.2; X.509 `sha256WithRSAEncryption`,
//! what rcgen writes for CSRs and certificates). Both return the encoded message as the
//! big-endian integer input of RSASP1, `k` bytes long (the modulus length).

use ring::digest::{digest, Context, SHA256};

const HASH_LEN: usize = 32;

/// DER of DigestInfo { sha256, NULL } without the 32 hash bytes (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Why a message could not be encoded for this modulus.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {mod_bits}-bit RSA modulus is too small for {scheme} with SHA-256")]
pub struct EncodingError {
    pub scheme: &'static str,
    pub mod_bits: usize,
}

/// EMSA-PSS-ENCODE(M, emBits = modBits - 1) with salt length = hash length, left-padded
/// with zero bytes to the modulus length.
pub fn pss_sha256(
    msg: &[u8],
    mod_bits: usize,
    salt: &[u8; HASH_LEN],
) -> Result<Vec<u8>, EncodingError> {
    let too_small = EncodingError {
        scheme: "RSASSA-PSS",
        mod_bits,
    };
    let em_bits = mod_bits.checked_sub(1).ok_or(too_small.clone())?;
    let em_len = em_bits.div_ceil(8);
    let k = mod_bits.div_ceil(8);
    // Step 3: emLen < hLen + sLen + 2 is an encoding error.
    if em_len < 2 * HASH_LEN + 2 {
        return Err(too_small);
    }
    let m_hash = digest(&SHA256, msg);
    // Steps 5-6: H = Hash(0x00 * 8 || mHash || salt).
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0u8; 8]);
    ctx.update(m_hash.as_ref());
    ctx.update(salt);
    let h = ctx.finish();
    // Steps 7-10: maskedDB = (PS || 0x01 || salt) xor MGF1(H, emLen - hLen - 1).
    let db_len = em_len - HASH_LEN - 1;
    let mut db = mgf1_sha256(h.as_ref(), db_len);
    let one_at = db_len - HASH_LEN - 1;
    db[one_at] ^= 0x01;
    for (d, s) in db[one_at + 1..].iter_mut().zip(salt) {
        *d ^= s;
    }
    // Step 11: clear the leftmost 8*emLen - emBits bits.
    db[0] &= 0xff >> (8 * em_len - em_bits);
    // Step 12: EM = maskedDB || H || 0xbc, then as a k-byte integer.
    let mut out = Vec::with_capacity(k);
    out.resize(k - em_len, 0);
    out.extend_from_slice(&db);
    out.extend_from_slice(h.as_ref());
    out.push(0xbc);
    Ok(out)
}

/// EMSA-PKCS1-V1_5-ENCODE(M, k) with SHA-256: 0x00 0x01 0xff.. 0x00 DigestInfo.
pub fn pkcs1_sha256(msg: &[u8], mod_bits: usize) -> Result<Vec<u8>, EncodingError> {
    let k = mod_bits.div_ceil(8);
    let t_len = SHA256_DIGEST_INFO.len() + HASH_LEN;
    // Step 3: emLen < tLen + 11 is an encoding error (at least 8 bytes of 0xff).
    if k < t_len + 11 {
        return Err(EncodingError {
            scheme: "RSASSA-PKCS1-v1_5",
            mod_bits,
        });
    }
    let mut out = Vec::with_capacity(k);
    out.extend_from_slice(&[0x00, 0x01]);
    out.resize(k - t_len - 1, 0xff);
    out.push(0x00);
    out.extend_from_slice(&SHA256_DIGEST_INFO);
    out.extend_from_slice(digest(&SHA256, msg).as_ref());
    Ok(out)
}

/// MGF1 with SHA-256 (RFC 8017 B.2.1).
fn mgf1_sha256(seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + HASH_LEN);
    let mut counter: u32 = 0;
    while out.len() < len {
        let mut ctx = Context::new(&SHA256);
        ctx.update(seed);
        ctx.update(&counter.to_be_bytes());
        out.extend_from_slice(ctx.finish().as_ref());
        counter += 1;
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{
        UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
    };
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::traits::PublicKeyParts;
    use rsa::{BoxedUint, PrivateKey as RsaPrivateKey};
    use std::sync::OnceLock;

    /// One software RSA-2048 key for the whole module (generation is slow in debug builds).
    fn key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| {
            RsaPrivateKey::new(&mut crate::keys::rng::SystemRng::new(), 2048).expect("generate")
        })
    }

    /// The raw private operation in software, standing in for the kernel's KEYCTL_PKEY_DECRYPT.
    fn raw_sign(key: &RsaPrivateKey, em: &[u8]) -> Vec<u8> {
        let bits = key.n().as_ref().bits_precision();
        let m = BoxedUint::from_be_slice(em, bits).expect("em fits the modulus");
        let s =
            rsa::hazmat::rsa_decrypt_and_check(key, None::<&mut crate::keys::rng::SystemRng>, &m)
                .expect("raw private op");
        let bytes = s.to_be_bytes();
        bytes[bytes.len() - em.len()..].to_vec()
    }

    fn verify(
        alg: &'static dyn ring::signature::VerificationAlgorithm,
        msg: &[u8],
        sig: &[u8],
    ) -> bool {
        let public = key().to_public_key().to_pkcs1_der().expect("public der");
        UnparsedPublicKey::new(alg, public.as_bytes())
            .verify(msg, sig)
            .is_ok()
    }

    #[test]
    fn pss_encoding_verifies_with_ring() {
        let mut salt = [0u8; 32];
        crate::keys::rng::SystemRng::new().fill(&mut salt).unwrap();
        for msg in [&b""[..], b"tessera", &[0x5a; 1000]] {
            let em = pss_sha256(msg, 2048, &salt).unwrap();
            assert_eq!(em.len(), 256);
            assert_eq!(em[0] & 0x80, 0, "top bit cleared so EM < n");
            assert_eq!(em[255], 0xbc);
            let sig = raw_sign(key(), &em);
            assert!(verify(&RSA_PSS_2048_8192_SHA256, msg, &sig));
            assert!(!verify(&RSA_PSS_2048_8192_SHA256, b"other message", &sig));
        }
    }

    #[test]
    fn pkcs1_encoding_verifies_with_ring() {
        let msg = b"certificate signing request";
        let em = pkcs1_sha256(msg, 2048).unwrap();
        assert_eq!(&em[..2], &[0x00, 0x01]);
        assert_eq!(em.len(), 256);
        let sig = raw_sign(key(), &em);
        assert!(verify(&RSA_PKCS1_2048_8192_SHA256, msg, &sig));
    }

    #[test]
    fn pss_is_deterministic_for_a_fixed_salt_and_random_otherwise() {
        let salt = [7u8; 32];
        assert_eq!(pss_sha256(b"m", 2048, &salt), pss_sha256(b"m", 2048, &salt));
        assert_ne!(
            pss_sha256(b"m", 2048, &salt),
            pss_sha256(b"m", 2048, &[8u8; 32])
        );
    }

    #[test]
    fn pss_when_em_is_one_byte_shorter_than_the_modulus() {
        // modBits = 2049: emBits = 2048 is a whole number of bytes, so emLen = k - 1 and the
        // integer starts with a zero byte; no bits of maskedDB are cleared.
        let em = pss_sha256(b"m", 2049, &[1u8; 32]).unwrap();
        assert_eq!(em.len(), 257);
        assert_eq!(em[0], 0);
        assert_eq!(em[256], 0xbc);
    }

    #[test]
    fn mgf1_matches_its_definition() {
        let out = mgf1_sha256(b"seed", 40);
        let mut first = b"seed".to_vec();
        first.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(&out[..32], digest(&SHA256, &first).as_ref());
        let mut second = b"seed".to_vec();
        second.extend_from_slice(&1u32.to_be_bytes());
        assert_eq!(&out[32..], &digest(&SHA256, &second).as_ref()[..8]);
    }

    #[test]
    fn too_small_moduli_are_encoding_errors() {
        assert!(pss_sha256(b"m", 512, &[0; 32]).is_err());
        assert!(pkcs1_sha256(b"m", 256).is_err());
        assert!(pss_sha256(b"m", 0, &[0; 32]).is_err());
    }
}
