//! Any PKCS#11 HSM (tested with SoftHSM2): one AES-256 key per tenant and version, generated
//! inside the token as sensitive and not extractable, labelled `quire/<tenant>/<version>`.
//! Intermediate keys are wrapped with AES-GCM inside the token, tenant and version as
//! associated data; retiring a version or shredding a tenant destroys the token objects.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11 as Module};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use quire_codecs::sealed::SecretKey;
use zeroize::{Zeroize, Zeroizing};

use crate::backend::{wrap_context, BackendError, KeyBackend, KeyName};

const LABEL_AAD: &[u8] = b"quire/1 hsm wrap";
const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;

/// Which module, token and PIN.
#[derive(Clone)]
pub struct Pkcs11Options {
    /// The vendor's PKCS#11 library, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The user PIN.
    pub pin: Zeroizing<String>,
}

impl std::fmt::Debug for Pkcs11Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Options")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .finish_non_exhaustive()
    }
}

/// The PKCS#11 backend: one logged-in session, used by one caller at a time.
pub struct Pkcs11 {
    session: Mutex<Session>,
    token_label: String,
    _module: Module,
}

impl std::fmt::Debug for Pkcs11 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11")
            .field("token_label", &self.token_label)
            .finish_non_exhaustive()
    }
}

fn failed(what: &str) -> impl FnOnce(CkError) -> BackendError + '_ {
    move |e| match e {
        CkError::Pkcs11(RvError::PinIncorrect | RvError::PinExpired | RvError::PinLocked, _) => {
            BackendError::Denied(format!("{what}: the PIN was refused ({e})"))
        }
        CkError::Pkcs11(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange, _) => {
            BackendError::Refused
        }
        e => BackendError::Unavailable(format!("{what}: {e}")),
    }
}

fn label(name: KeyName<'_>) -> Vec<u8> {
    format!("quire/{}/{}", name.tenant, name.version).into_bytes()
}

/// A PKCS#11 library is initialised once per process (a second `C_Initialize` fails, and a
/// `C_Finalize` would end every other user's sessions), so each module is loaded once and
/// kept for the life of the process.
fn module(path: &Path) -> Result<Module, BackendError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Module>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .expect("pkcs11 module lock");
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let module = Module::new(path).map_err(|e| {
        BackendError::Unavailable(format!(
            "loading the PKCS#11 module {}: {e}",
            path.display()
        ))
    })?;
    module
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(failed("initialising the PKCS#11 module"))?;
    modules.insert(path.to_path_buf(), module.clone());
    Ok(module)
}

impl Pkcs11 {
    /// Loads the module (once per process), finds the token by label and logs in.
    pub fn open(options: &Pkcs11Options) -> Result<Pkcs11, BackendError> {
        let module = module(&options.module)?;
        let mut slot = None;
        for s in module
            .get_slots_with_token()
            .map_err(failed("listing tokens"))?
        {
            let info = module
                .get_token_info(s)
                .map_err(failed("reading a token"))?;
            if info.label().trim_end() == options.token_label {
                slot = Some(s);
                break;
            }
        }
        let slot = slot.ok_or_else(|| {
            BackendError::Denied(format!(
                "no token labelled {:?} in {}; initialise one (softhsm2-util --init-token) or fix [vault] token_label",
                options.token_label,
                options.module.display()
            ))
        })?;
        let session = module
            .open_rw_session(slot)
            .map_err(failed("opening a session"))?;
        let pin = AuthPin::from(options.pin.to_string());
        match session.login(UserType::User, Some(&pin)) {
            // Login state belongs to the process: another session of ours logged in already.
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) | Ok(()) => {}
            Err(e) => return Err(failed("logging in to the token")(e)),
        }
        Ok(Pkcs11 {
            session: Mutex::new(session),
            token_label: options.token_label.clone(),
            _module: module,
        })
    }

    fn find(&self, session: &Session, label: Vec<u8>) -> Result<Vec<ObjectHandle>, BackendError> {
        session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(label),
            ])
            .map_err(failed("searching the token"))
    }

    fn key(&self, session: &Session, name: KeyName<'_>) -> Result<ObjectHandle, BackendError> {
        self.find(session, label(name))?
            .into_iter()
            .next()
            .ok_or_else(|| {
                BackendError::Disabled(format!(
                    "no key labelled {} in token {:?}",
                    String::from_utf8_lossy(&label(name)),
                    self.token_label
                ))
            })
    }
}

impl KeyBackend for Pkcs11 {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn probe(&self) -> Result<(), BackendError> {
        let session = self.session.lock().expect("pkcs11 lock");
        self.find(&session, b"quire/probe".to_vec()).map(drop)
    }

    fn prepare(&self, name: KeyName<'_>) -> Result<(), BackendError> {
        let session = self.session.lock().expect("pkcs11 lock");
        if !self.find(&session, label(name))?.is_empty() {
            return Ok(());
        }
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(label(name)),
                ],
            )
            .map_err(failed("generating a key in the token"))?;
        Ok(())
    }

    fn wrap(&self, name: KeyName<'_>, key: &SecretKey) -> Result<Vec<u8>, BackendError> {
        let session = self.session.lock().expect("pkcs11 lock");
        let handle = self.key(&session, name)?;
        let mut iv = [0u8; IV_LEN];
        getrandom::fill(&mut iv).expect("the OS random source failed");
        let aad = wrap_context(LABEL_AAD, name);
        let mut iv_param = iv;
        let params = GcmParams::new(&mut iv_param, &aad, TAG_BITS.into())
            .map_err(failed("preparing AES-GCM"))?;
        let sealed = session
            .encrypt(&Mechanism::AesGcm(params), handle, key.expose())
            .map_err(failed("wrapping a key in the token"))?;
        let mut out = Vec::with_capacity(IV_LEN + sealed.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, name: KeyName<'_>, wrapped: &[u8]) -> Result<SecretKey, BackendError> {
        if wrapped.len() != IV_LEN + 32 + 16 {
            return Err(BackendError::Refused);
        }
        let session = self.session.lock().expect("pkcs11 lock");
        let handle = self.key(&session, name)?;
        let mut iv: [u8; IV_LEN] = wrapped[..IV_LEN].try_into().expect("length checked");
        let aad = wrap_context(LABEL_AAD, name);
        let params =
            GcmParams::new(&mut iv, &aad, TAG_BITS.into()).map_err(failed("preparing AES-GCM"))?;
        let mut plain = session
            .decrypt(&Mechanism::AesGcm(params), handle, &wrapped[IV_LEN..])
            .map_err(|e| match e {
                // SoftHSM answers a failed tag check with a generic failure.
                CkError::Pkcs11(RvError::FunctionFailed | RvError::EncryptedDataInvalid, _) => {
                    BackendError::Refused
                }
                e => failed("unwrapping a key in the token")(e),
            })?;
        let key: Result<[u8; 32], _> = plain.as_slice().try_into();
        plain.zeroize();
        Ok(SecretKey::from_bytes(
            key.map_err(|_| BackendError::Refused)?,
        ))
    }

    fn retire(&self, name: KeyName<'_>) -> Result<(), BackendError> {
        let session = self.session.lock().expect("pkcs11 lock");
        for handle in self.find(&session, label(name))? {
            session
                .destroy_object(handle)
                .map_err(failed("destroying a key in the token"))?;
        }
        Ok(())
    }

    fn shred(&self, tenant: &str) -> Result<(), BackendError> {
        let session = self.session.lock().expect("pkcs11 lock");
        let prefix = format!("quire/{tenant}/").into_bytes();
        let all = session
            .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
            .map_err(failed("searching the token"))?;
        for handle in all {
            let attrs = session
                .get_attributes(handle, &[AttributeType::Label])
                .map_err(failed("reading a key's label"))?;
            let ours = attrs.iter().any(|a| match a {
                Attribute::Label(l) => {
                    l.starts_with(&prefix) && l[prefix.len()..].iter().all(u8::is_ascii_digit)
                }
                _ => false,
            });
            if ours {
                session
                    .destroy_object(handle)
                    .map_err(failed("destroying a key in the token"))?;
            }
        }
        Ok(())
    }
}
