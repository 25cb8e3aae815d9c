//! In-process XML Schema validation with the system's libxml2, for the simulated Exchange.
//!
//! The simulated EWS mailbox must reject every request that a real Exchange server would reject
//! for failing Microsoft's schema (`schemas/ews/messages.xsd`, which imports `types.xsd`; see
//! `schemas/ews/PROVENANCE.md`). Running `xmllint` per request costs about 0.34 s, almost all of
//! it compiling the schema, which is far too slow for the thousands of requests a test run sends.
//! [`SchemaValidator`] compiles the schema once and then validates each document in-process in a
//! fraction of a millisecond, with the same engine as `xmllint`, so both give the same verdicts.
//!
//! libxml2 is loaded at run time with `libloading` (`dlopen("libxml2.so.2")`): Debian's
//! `libxml2-utils`, which `cargo xtask setup` installs for the schema tests, depends on the
//! `libxml2` package that ships it. No headers, build script or bindings generator are needed;
//! the few C functions used are declared below with the exact signatures of libxml2 2.9's headers
//! (`xmlschemas.h`, `parser.h`, `tree.h`, `xmlerror.h`, `xmlIO.h`). The library is loaded once
//! per process and never unloaded (libxml2 keeps per-thread state whose destructors must stay
//! mapped).
//!
//! Safety model: every call into libxml2 happens while holding one process-wide [`Mutex`], so
//! libxml2's global and per-thread state (error handlers, parser initialisation, the schema's
//! dictionary) is never touched by two threads at once. Network access is disabled for
//! everything libxml2 loads (the no-network entity loader, as `xmllint --nonet` installs, and
//! `XML_PARSE_NONET` for each document). Error messages reach Rust through libxml2's structured
//! error callback, which appends them to a `Vec` owned by the caller's stack frame for exactly
//! the duration of the call.

use libloading::Library;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

/// The shared object loaded at run time (Debian package `libxml2`, pulled in by `libxml2-utils`).
pub const LIBXML2_SONAME: &str = "libxml2.so.2";

/// The vendored EWS messages schema of this repository, `<workspace>/schemas/ews/messages.xsd`
/// (computed from the simulator crate's directory at compile time).
pub fn ews_messages_xsd() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .parent()
        .unwrap_or(crate_dir)
        .join("schemas")
        .join("ews")
        .join("messages.xsd")
}

/// Why a [`SchemaValidator`] could not be made.
#[derive(Debug)]
pub enum SchemaError {
    /// `libxml2.so.2` could not be loaded, or lacks a function this module needs.
    Libxml2Unavailable {
        /// What the dynamic loader (or the symbol lookup) said.
        reason: String,
    },
    /// The schema file does not exist (or is not a regular file).
    SchemaNotFound {
        /// The path that was given.
        path: PathBuf,
    },
    /// The schema path cannot be handed to libxml2 (not UTF-8, or contains a NUL byte).
    UnusablePath {
        /// The path that was given.
        path: PathBuf,
    },
    /// libxml2 could not compile the schema.
    SchemaDoesNotCompile {
        /// The schema that was given.
        path: PathBuf,
        /// libxml2's messages, each with its file and line.
        messages: Vec<String>,
    },
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaError::Libxml2Unavailable { reason } => write!(
                f,
                "cannot use the XML library {LIBXML2_SONAME}: {reason}. Install Debian's `libxml2` \
                 package (it comes with `libxml2-utils`, which `cargo xtask setup` installs)"
            ),
            SchemaError::SchemaNotFound { path } => {
                write!(f, "XML schema {} does not exist", path.display())
            }
            SchemaError::UnusablePath { path } => write!(
                f,
                "XML schema path {} cannot be passed to libxml2 (not UTF-8 or contains NUL)",
                path.display()
            ),
            SchemaError::SchemaDoesNotCompile { path, messages } => {
                write!(
                    f,
                    "libxml2 cannot compile the XML schema {}",
                    path.display()
                )?;
                for message in messages {
                    write!(f, "\n  {message}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for SchemaError {}

/// A compiled XML Schema, ready to validate documents from any thread.
///
/// Validations are serialised by a process-wide lock (libxml2's global state), so concurrent
/// callers wait for each other; each one takes well under a millisecond for an EWS request.
pub struct SchemaValidator {
    libxml2: &'static Libxml2,
    /// The compiled schema (`xmlSchemaPtr`), owned by this value, freed on drop.
    schema: *mut c_void,
    xsd: PathBuf,
}

// SAFETY: `schema` is a libxml2 heap object that is not tied to the thread that created it; it
// is only ever passed to libxml2 while `LIBXML2_LOCK` is held (in `validate` and `drop`), so no
// two threads use it at once, and `&self` methods never mutate it outside libxml2's own
// (locked) calls. `libxml2` is a `&'static` table of function pointers.
unsafe impl Send for SchemaValidator {}
// SAFETY: see `Send`: all access to `schema` is serialised by `LIBXML2_LOCK`.
unsafe impl Sync for SchemaValidator {}

impl fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaValidator")
            .field("xsd", &self.xsd)
            .finish_non_exhaustive()
    }
}

impl SchemaValidator {
    /// Loads libxml2 and compiles the schema at `xsd` (e.g. [`ews_messages_xsd`]); the files it
    /// includes or imports are read from disk, never from the network.
    pub fn load(xsd: &Path) -> Result<SchemaValidator, SchemaError> {
        if !xsd.is_file() {
            return Err(SchemaError::SchemaNotFound {
                path: xsd.to_owned(),
            });
        }
        let url = xsd
            .to_str()
            .and_then(|s| CString::new(s).ok())
            .ok_or_else(|| SchemaError::UnusablePath {
                path: xsd.to_owned(),
            })?;
        let libxml2 = Libxml2::get()?;
        let _lock = lock_libxml2();
        let mut sink = ErrorSink {
            messages: Vec::new(),
            with_file: true,
        };
        let schema = {
            let handler = ThreadErrorHandler::install(libxml2, &mut sink);
            // SAFETY: the lock is held; `url` is a NUL-terminated string that outlives the call.
            let parser = unsafe { (libxml2.schema_new_parser_ctxt)(url.as_ptr()) };
            let schema = if parser.is_null() {
                std::ptr::null_mut()
            } else {
                // SAFETY: the lock is held; `parser` is the live context just created, and
                // `handler.user_data()` points at `sink`, which outlives the parse (the context
                // is freed before `sink` goes out of scope).
                unsafe {
                    (libxml2.schema_set_parser_structured_errors)(
                        parser,
                        Some(collect_error),
                        handler.user_data(),
                    );
                    let schema = (libxml2.schema_parse)(parser);
                    (libxml2.schema_free_parser_ctxt)(parser);
                    schema
                }
            };
            drop(handler);
            schema
        };
        let mut messages = sink.messages;
        if schema.is_null() {
            if messages.is_empty() {
                messages.push("libxml2 gave no reason".to_owned());
            }
            return Err(SchemaError::SchemaDoesNotCompile {
                path: xsd.to_owned(),
                messages,
            });
        }
        Ok(SchemaValidator {
            libxml2,
            schema,
            xsd: xsd.to_owned(),
        })
    }

    /// The schema this validator was compiled from.
    pub fn xsd(&self) -> &Path {
        &self.xsd
    }

    /// Validates one XML document (UTF-8, whatever its XML declaration says). `Ok` when it is
    /// well-formed and valid; otherwise every violation libxml2 reports, each as
    /// `line N: message` (the same messages as `xmllint`). Entities are not expanded and nothing
    /// is fetched.
    pub fn validate(&self, xml: &str) -> Result<(), Vec<String>> {
        let size = c_int::try_from(xml.len()).map_err(|_| {
            vec![format!(
                "document of {} bytes is larger than libxml2 accepts ({} bytes)",
                xml.len(),
                c_int::MAX
            )]
        })?;
        if xml.is_empty() {
            // libxml2 returns no document and no message for an empty buffer.
            return Err(vec!["line 1: Document is empty".to_owned()]);
        }
        let libxml2 = self.libxml2;
        let _lock = lock_libxml2();
        let mut sink = ErrorSink {
            messages: Vec::new(),
            with_file: false,
        };
        let verdict = {
            let handler = ThreadErrorHandler::install(libxml2, &mut sink);
            // SAFETY: the lock is held; `xml` is valid for `size` bytes (no NUL terminator is
            // needed with an explicit size), the URL and encoding are NUL-terminated literals.
            // Parse errors go to the thread's structured handler installed above.
            let doc = unsafe {
                (libxml2.read_memory)(
                    xml.as_ptr().cast::<c_char>(),
                    size,
                    DOCUMENT_URL.as_ptr(),
                    c"UTF-8".as_ptr(),
                    XML_PARSE_NONET,
                )
            };
            let verdict = if doc.is_null() {
                Verdict::NotWellFormed
            } else {
                // SAFETY: the lock is held; `self.schema` is the live compiled schema (freed only
                // in `drop`, which needs `&mut self`), `doc` the live document just parsed. The
                // valid context is freed before the document, and both before `sink` (the
                // callback's user data) goes out of scope.
                unsafe {
                    let context = (libxml2.schema_new_valid_ctxt)(self.schema);
                    let verdict = if context.is_null() {
                        Verdict::NoContext
                    } else {
                        (libxml2.schema_set_valid_structured_errors)(
                            context,
                            Some(collect_error),
                            handler.user_data(),
                        );
                        let code = (libxml2.schema_validate_doc)(context, doc);
                        (libxml2.schema_free_valid_ctxt)(context);
                        Verdict::Validated(code)
                    };
                    (libxml2.free_doc)(doc);
                    verdict
                }
            };
            drop(handler);
            verdict
        };
        let mut messages = sink.messages;
        match verdict {
            Verdict::Validated(0) => Ok(()),
            Verdict::Validated(code) => {
                messages.retain(|m| !m.starts_with("warning:"));
                if messages.is_empty() {
                    messages.push(format!(
                        "libxml2 rejected the document (code {code}) without a message"
                    ));
                }
                Err(messages)
            }
            Verdict::NotWellFormed => {
                if messages.is_empty() {
                    messages.push("the document is not well-formed XML".to_owned());
                }
                Err(messages)
            }
            Verdict::NoContext => Err(vec![
                "libxml2 could not create a schema validation context (out of memory?)".to_owned(),
            ]),
        }
    }
}

impl Drop for SchemaValidator {
    fn drop(&mut self) {
        let _lock = lock_libxml2();
        // SAFETY: the lock is held; `self.schema` was returned by `xmlSchemaParse`, is owned by
        // this value alone and is not used after this point.
        unsafe { (self.libxml2.schema_free)(self.schema) };
    }
}

/// What happened to one document.
enum Verdict {
    /// `xmlReadMemory` returned no document.
    NotWellFormed,
    /// `xmlSchemaNewValidCtxt` returned no context.
    NoContext,
    /// `xmlSchemaValidateDoc`'s result: 0 valid, > 0 invalid, -1 internal error.
    Validated(c_int),
}

/// The URL libxml2 gives a validated document (appears only in messages, which omit it).
const DOCUMENT_URL: &CStr = c"document.xml";

/// `XML_PARSE_NONET` from `parser.h` (`xmlParserOption`): forbid network access.
const XML_PARSE_NONET: c_int = 1 << 11;

/// `XML_ERR_WARNING` from `xmlerror.h` (`xmlErrorLevel`).
const XML_ERR_WARNING: c_int = 1;

/// Serialises every call into libxml2 (see the module comment).
static LIBXML2_LOCK: Mutex<()> = Mutex::new(());

/// The process's libxml2, loaded on first use (a failure is remembered too).
static LIBXML2: OnceLock<Result<Libxml2, String>> = OnceLock::new();

fn lock_libxml2() -> MutexGuard<'static, ()> {
    // The guarded state lives in libxml2; a panic while holding the lock cannot leave it
    // half-updated in a way later calls could observe (each call sets up and tears down its own
    // contexts), so a poisoned lock is still usable.
    LIBXML2_LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `struct _xmlError` from `xmlerror.h` (libxml2 2.9), as passed to structured error handlers.
#[repr(C)]
struct XmlError {
    domain: c_int,
    code: c_int,
    message: *const c_char,
    /// `xmlErrorLevel`, a C enum (an `int`).
    level: c_int,
    file: *const c_char,
    line: c_int,
    str1: *const c_char,
    str2: *const c_char,
    str3: *const c_char,
    int1: c_int,
    /// The column, or 0.
    int2: c_int,
    ctxt: *mut c_void,
    node: *mut c_void,
}

/// `xmlStructuredErrorFunc`: `void (*)(void *userData, xmlErrorPtr error)`.
type XmlStructuredErrorFunc = Option<unsafe extern "C" fn(*mut c_void, *const XmlError)>;

/// `xmlExternalEntityLoader`:
/// `xmlParserInputPtr (*)(const char *URL, const char *ID, xmlParserCtxtPtr context)`.
type XmlExternalEntityLoader =
    Option<unsafe extern "C" fn(*const c_char, *const c_char, *mut c_void) -> *mut c_void>;

/// The libxml2 functions this module calls (opaque pointers are `*mut c_void`).
struct Libxml2 {
    /// Keeps the shared object mapped; it lives in a `static` and is never dropped.
    _library: Library,
    /// `xmlSchemaParserCtxtPtr xmlSchemaNewParserCtxt(const char *URL)`
    schema_new_parser_ctxt: unsafe extern "C" fn(*const c_char) -> *mut c_void,
    /// `void xmlSchemaSetParserStructuredErrors(xmlSchemaParserCtxtPtr, xmlStructuredErrorFunc, void *)`
    schema_set_parser_structured_errors:
        unsafe extern "C" fn(*mut c_void, XmlStructuredErrorFunc, *mut c_void),
    /// `xmlSchemaPtr xmlSchemaParse(xmlSchemaParserCtxtPtr ctxt)`
    schema_parse: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    /// `void xmlSchemaFreeParserCtxt(xmlSchemaParserCtxtPtr ctxt)`
    schema_free_parser_ctxt: unsafe extern "C" fn(*mut c_void),
    /// `void xmlSchemaFree(xmlSchemaPtr schema)`
    schema_free: unsafe extern "C" fn(*mut c_void),
    /// `xmlSchemaValidCtxtPtr xmlSchemaNewValidCtxt(xmlSchemaPtr schema)`
    schema_new_valid_ctxt: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    /// `void xmlSchemaSetValidStructuredErrors(xmlSchemaValidCtxtPtr, xmlStructuredErrorFunc, void *)`
    schema_set_valid_structured_errors:
        unsafe extern "C" fn(*mut c_void, XmlStructuredErrorFunc, *mut c_void),
    /// `int xmlSchemaValidateDoc(xmlSchemaValidCtxtPtr ctxt, xmlDocPtr instance)`
    schema_validate_doc: unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
    /// `void xmlSchemaFreeValidCtxt(xmlSchemaValidCtxtPtr ctxt)`
    schema_free_valid_ctxt: unsafe extern "C" fn(*mut c_void),
    /// `xmlDocPtr xmlReadMemory(const char *buffer, int size, const char *URL,
    /// const char *encoding, int options)`
    read_memory: unsafe extern "C" fn(
        *const c_char,
        c_int,
        *const c_char,
        *const c_char,
        c_int,
    ) -> *mut c_void,
    /// `void xmlFreeDoc(xmlDocPtr cur)`
    free_doc: unsafe extern "C" fn(*mut c_void),
    /// `void xmlSetStructuredErrorFunc(void *ctx, xmlStructuredErrorFunc handler)` (per thread)
    set_structured_error_func: unsafe extern "C" fn(*mut c_void, XmlStructuredErrorFunc),
}

impl Libxml2 {
    /// The process's libxml2, loading and initialising it on first use.
    fn get() -> Result<&'static Libxml2, SchemaError> {
        LIBXML2
            .get_or_init(Libxml2::load)
            .as_ref()
            .map_err(|reason| SchemaError::Libxml2Unavailable {
                reason: reason.clone(),
            })
    }

    fn load() -> Result<Libxml2, String> {
        // SAFETY: loading libxml2 runs its ELF initialisers, which only set up its own globals
        // (no process-wide side effects such as signal handlers or forks).
        let library = unsafe { Library::new(LIBXML2_SONAME) }.map_err(|e| e.to_string())?;
        // Each symbol is declared with the signature from libxml2 2.9's headers (quoted on the
        // field it fills); the pointers stay valid because `library` is never unloaded.
        macro_rules! symbol {
            ($name:literal) => {
                // SAFETY: see above: the requested type matches the C declaration of `$name`.
                *unsafe { library.get(concat!($name, "\0").as_bytes()) }
                    .map_err(|e| format!("no function {} in it: {e}", $name))?
            };
        }
        let init_parser: unsafe extern "C" fn() = symbol!("xmlInitParser");
        let set_external_entity_loader: unsafe extern "C" fn(XmlExternalEntityLoader) =
            symbol!("xmlSetExternalEntityLoader");
        let no_net_external_entity_loader: unsafe extern "C" fn(
            *const c_char,
            *const c_char,
            *mut c_void,
        ) -> *mut c_void = symbol!("xmlNoNetExternalEntityLoader");
        let libxml2 = Libxml2 {
            schema_new_parser_ctxt: symbol!("xmlSchemaNewParserCtxt"),
            schema_set_parser_structured_errors: symbol!("xmlSchemaSetParserStructuredErrors"),
            schema_parse: symbol!("xmlSchemaParse"),
            schema_free_parser_ctxt: symbol!("xmlSchemaFreeParserCtxt"),
            schema_free: symbol!("xmlSchemaFree"),
            schema_new_valid_ctxt: symbol!("xmlSchemaNewValidCtxt"),
            schema_set_valid_structured_errors: symbol!("xmlSchemaSetValidStructuredErrors"),
            schema_validate_doc: symbol!("xmlSchemaValidateDoc"),
            schema_free_valid_ctxt: symbol!("xmlSchemaFreeValidCtxt"),
            read_memory: symbol!("xmlReadMemory"),
            free_doc: symbol!("xmlFreeDoc"),
            set_structured_error_func: symbol!("xmlSetStructuredErrorFunc"),
            _library: library,
        };
        let _lock = lock_libxml2();
        // SAFETY: the lock is held (nothing else calls libxml2 meanwhile). `xmlInitParser` is
        // idempotent. The external entity loader is a process-wide setting (as `xmllint --nonet`
        // makes it): from now on libxml2 reads local files only, for schemas and documents alike;
        // the loader is a function inside the same never-unloaded library.
        unsafe {
            init_parser();
            set_external_entity_loader(Some(no_net_external_entity_loader));
        }
        Ok(libxml2)
    }
}

/// Where [`collect_error`] puts libxml2's messages during one call.
struct ErrorSink {
    messages: Vec<String>,
    /// Whether to name the file (useful for a schema spread over several files; a validated
    /// document is always the one given).
    with_file: bool,
}

/// Routes the current thread's libxml2 errors (those not raised through a context, e.g.
/// well-formedness errors and schema files that cannot be read) to an [`ErrorSink`] while it
/// lives, and back to a handler that discards them when dropped, so libxml2 never holds a
/// pointer to a sink that has gone and never prints to stderr.
struct ThreadErrorHandler<'a> {
    libxml2: &'static Libxml2,
    user_data: *mut c_void,
    _sink: std::marker::PhantomData<&'a mut ErrorSink>,
}

impl<'a> ThreadErrorHandler<'a> {
    /// Installs the handler; the caller must hold `LIBXML2_LOCK` for the handler's lifetime.
    fn install(libxml2: &'static Libxml2, sink: &'a mut ErrorSink) -> ThreadErrorHandler<'a> {
        let user_data = (sink as *mut ErrorSink).cast::<c_void>();
        // SAFETY: the caller holds the lock; `user_data` points at `sink`, which the returned
        // value borrows mutably (so nothing else touches it) and which outlives the installation
        // (undone in `drop`).
        unsafe { (libxml2.set_structured_error_func)(user_data, Some(collect_error)) };
        ThreadErrorHandler {
            libxml2,
            user_data,
            _sink: std::marker::PhantomData,
        }
    }

    /// The user-data pointer to hand to libxml2's context-specific error setters.
    fn user_data(&self) -> *mut c_void {
        self.user_data
    }
}

impl Drop for ThreadErrorHandler<'_> {
    fn drop(&mut self) {
        // SAFETY: still under the caller's lock; the discarding handler takes no user data.
        unsafe {
            (self.libxml2.set_structured_error_func)(std::ptr::null_mut(), Some(discard_error))
        };
    }
}

/// Structured error handler installed between calls: drops the message (instead of libxml2's
/// default of printing it to stderr).
unsafe extern "C" fn discard_error(_user_data: *mut c_void, _error: *const XmlError) {}

/// Structured error handler: appends `error` to the [`ErrorSink`] at `user_data`.
///
/// Never unwinds into C: the body runs under `catch_unwind` and a panic only loses the message.
unsafe extern "C" fn collect_error(user_data: *mut c_void, error: *const XmlError) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if user_data.is_null() || error.is_null() {
            return;
        }
        // SAFETY: libxml2 passes a valid `xmlError` for the duration of the call; `user_data`
        // is the `ErrorSink` installed by this module, alive and otherwise unused (its owner is
        // blocked inside the libxml2 call that raised this error, on this very thread).
        let (error, sink) = unsafe { (&*error, &mut *user_data.cast::<ErrorSink>()) };
        // SAFETY: libxml2's strings are NUL-terminated or null.
        let text = |s: *const c_char| {
            (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
        };
        let message = text(error.message).unwrap_or_else(|| format!("error {}", error.code));
        let message = message.trim_end();
        let severity = if error.level == XML_ERR_WARNING {
            "warning: "
        } else {
            ""
        };
        let place = match (sink.with_file, text(error.file)) {
            (true, Some(file)) => format!("{file}:{}", error.line),
            _ => format!("line {}", error.line),
        };
        sink.messages.push(format!("{severity}{place}: {message}"));
    }));
}
