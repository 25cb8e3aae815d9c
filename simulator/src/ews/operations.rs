//! One handler per EWS operation of the simulated Exchange: GetFolder, FindFolder, SyncFolderItems,
//! GetItem, FindItem, CreateItem (meeting responses, RemoveItem, new meetings and messages),
//! UpdateItem, DeleteItem, Subscribe, GetEvents, Unsubscribe, and the set-up of
//! GetStreamingEvents (the streaming itself is in [`super::http`]). Each returns the response
//! element (declaring `m:` and `t:`) or a SOAP fault; per-item errors are answered in their own
//! response message with `ResponseClass="Error"`, as Exchange does.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use roxmltree::Node;
use vmr_core::meeting::{Body, ItemType, Person, UnixMs};

use super::flows::{Answer, Disposition, EwsError};
use super::items_xml::{
    format_time, parse_extended, parse_recurrence, parse_time, write_item, write_item_id, ItemShape,
};
use super::model::{
    blank_item, decode_occurrence_id, decode_sync_state, decode_watermark, encode_occurrence_id,
    encode_sync_state, encode_watermark, normalize_email, ChangeKind, Event, EventKind, FolderName,
    Item, ItemKind, Store, Subscription, SubscriptionKind,
};
use super::soap::{
    child, child_text, children, escape, XmlWriter, NS_M, NS_T, RESPONSE_NAMESPACES,
};
use super::{ExchangeServer, MeetingUpdate, SendMeeting, ServiceAccount};

/// Who is asking: the signed-in account and the mailbox it acts as.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub account: ServiceAccount,
    /// The impersonated mailbox, if any.
    pub impersonated: Option<String>,
}

impl RequestContext {
    /// The mailbox distinguished folder ids without `t:Mailbox` refer to.
    fn own_mailbox(&self) -> Option<String> {
        self.impersonated
            .clone()
            .or_else(|| self.account.mailbox.as_ref().map(|m| normalize_email(m)))
    }

    fn may_open(&self, mailbox: &str) -> bool {
        self.own_mailbox().as_deref() == Some(mailbox) || grants(&self.account.full_access, mailbox)
    }
}

/// Whether a grant list covers `mailbox` (`*` covers all).
pub fn grants(list: &[String], mailbox: &str) -> bool {
    list.iter()
        .any(|g| g == "*" || normalize_email(g) == mailbox)
}

/// What an operation produced.
#[derive(Debug)]
pub enum Outcome {
    /// HTTP 200 with this response element.
    Response(String),
    /// HTTP 500 SOAP fault.
    Fault { code: &'static str, text: String },
    /// An open GetStreamingEvents connection on these subscriptions for `minutes`.
    Streaming {
        subscriptions: Vec<String>,
        minutes: u32,
    },
}

/// The operations this server implements.
pub const OPERATIONS: &[&str] = &[
    "GetFolder",
    "FindFolder",
    "SyncFolderItems",
    "GetItem",
    "FindItem",
    "CreateItem",
    "UpdateItem",
    "DeleteItem",
    "Subscribe",
    "GetEvents",
    "GetStreamingEvents",
    "Unsubscribe",
];

/// Runs the operation `op` (an element in the messages namespace).
pub fn execute(server: &ExchangeServer, ctx: &RequestContext, op: Node) -> Outcome {
    let name = op.tag_name().name();
    let mut w = Response::new(name);
    match name {
        "GetFolder" => get_folder(server, ctx, op, &mut w),
        "FindFolder" => find_folder(server, ctx, op, &mut w),
        "SyncFolderItems" => sync_folder_items(server, ctx, op, &mut w),
        "GetItem" => get_item(server, ctx, op, &mut w),
        "FindItem" => find_item(server, ctx, op, &mut w),
        "CreateItem" => create_item(server, ctx, op, &mut w),
        "UpdateItem" => update_item(server, ctx, op, &mut w),
        "DeleteItem" => delete_item(server, ctx, op, &mut w),
        "Subscribe" => subscribe(server, ctx, op, &mut w),
        "GetEvents" => get_events(server, ctx, op, &mut w),
        "Unsubscribe" => unsubscribe(server, ctx, op, &mut w),
        "GetStreamingEvents" => return get_streaming_events(server, ctx, op, w),
        other => {
            return Outcome::Fault {
                code: "ErrorInvalidRequest",
                text: format!("The request is invalid: the simulated Exchange server does not implement the {other} operation."),
            }
        }
    }
    Outcome::Response(w.finish())
}

/// A response element being written.
pub struct Response {
    op: String,
    pub w: XmlWriter,
}

impl Response {
    /// Opens `<m:{op}Response xmlns:m xmlns:t><m:ResponseMessages>`.
    pub fn new(op: &str) -> Response {
        let mut w = XmlWriter::new();
        w.start(&format!("m:{op}Response"), &RESPONSE_NAMESPACES);
        w.start("m:ResponseMessages", &[]);
        Response {
            op: op.to_owned(),
            w,
        }
    }

    /// Opens a success message and writes `NoError`.
    pub fn success(&mut self) {
        let name = self.message_name();
        self.w.start(&name, &[("ResponseClass", "Success")]);
        self.w.text("m:ResponseCode", "NoError");
    }

    /// Opens an error message with text, code and link key (the caller closes it).
    pub fn error(&mut self, error: &EwsError) {
        let name = self.message_name();
        self.w.start(&name, &[("ResponseClass", "Error")]);
        self.w.text("m:MessageText", &error.text);
        self.w.text("m:ResponseCode", error.code);
        self.w.text("m:DescriptiveLinkKey", "0");
    }

    /// Closes the current message.
    pub fn close(&mut self) {
        let name = self.message_name();
        self.w.end(&name);
    }

    /// A whole error message; `items`: add the `<m:Items/>` ItemInfo messages require.
    pub fn error_message(&mut self, error: &EwsError, items: bool) {
        self.error(error);
        if items {
            self.w.empty("m:Items", &[]);
        }
        self.close();
    }

    fn message_name(&self) -> String {
        format!("m:{}ResponseMessage", self.op)
    }

    /// Closes the response element and returns it.
    pub fn finish(mut self) -> String {
        self.w.end("m:ResponseMessages");
        self.w.end(&format!("m:{}Response", self.op));
        self.w.finish()
    }
}

/// The in-band `ErrorServerBusy` answer for `op` (reference §1.9, the ews-rs capture).
pub fn server_busy_in_band(op: &str, back_off_ms: u64) -> String {
    let mut r = Response::new(op);
    r.error(&EwsError::new(
        "ErrorServerBusy",
        format!(
            "The server cannot service this request right now. Try again later., This operation exceeds the throttling budget for policy part 'ConcurrentSyncCalls', policy value '5',  Budget type: 'Ews'.  Suggested backoff time {back_off_ms} ms."
        ),
    ));
    r.w.start("m:MessageXml", &[]);
    r.w.text_with_attr(
        "t:Value",
        &[("Name", "BackOffMilliseconds")],
        &back_off_ms.to_string(),
    );
    r.w.end("m:MessageXml");
    match op {
        "SyncFolderItems" => {
            r.w.empty("m:SyncState", &[]);
            r.w.text("m:IncludesLastItemInRange", "true");
        }
        "GetItem" | "CreateItem" | "UpdateItem" => r.w.empty("m:Items", &[]),
        _ => {}
    }
    r.close();
    r.finish()
}

impl XmlWriter {
    /// `<name a="v">text</name>`.
    pub fn text_with_attr(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.start(name, attrs);
        self.raw(&escape(text));
        self.end(name);
    }
}

fn access_denied() -> EwsError {
    EwsError::new(
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    )
}

/// Resolves a `DistinguishedFolderId` or `FolderId` to (mailbox, folder).
fn resolve_folder(
    store: &Store,
    ctx: &RequestContext,
    node: Node,
) -> Result<(String, FolderName), EwsError> {
    match node.tag_name().name() {
        "DistinguishedFolderId" => {
            let id = node.attribute("Id").unwrap_or("");
            let folder = FolderName::from_distinguished_id(id).ok_or_else(|| {
                EwsError::new(
                    "ErrorFolderNotFound",
                    "The specified folder could not be found in the store.",
                )
            })?;
            let mailbox = match child(node, NS_T, "Mailbox")
                .and_then(|m| child_text(m, NS_T, "EmailAddress"))
            {
                Some(address) => {
                    let mailbox = normalize_email(address);
                    if !store.mailboxes.contains_key(&mailbox) {
                        return Err(EwsError::new(
                            "ErrorNonExistentMailbox",
                            "The SMTP address has no mailbox associated with it.",
                        ));
                    }
                    if !ctx.may_open(&mailbox) {
                        return Err(access_denied());
                    }
                    mailbox
                }
                None => ctx.own_mailbox().ok_or_else(|| {
                    EwsError::new(
                        "ErrorMissingEmailAddress",
                        "When making a request as an account that does not have a mailbox, you must specify the mailbox primary SMTP address for any distinguished folder Ids.",
                    )
                })?,
            };
            if !store.mailboxes.contains_key(&mailbox) {
                return Err(EwsError::new(
                    "ErrorNonExistentMailbox",
                    "The SMTP address has no mailbox associated with it.",
                ));
            }
            Ok((mailbox, folder))
        }
        "FolderId" => {
            let id = node.attribute("Id").unwrap_or("");
            let (mailbox, folder) = store.folder_by_id(id).ok_or_else(|| {
                EwsError::new(
                    "ErrorFolderNotFound",
                    "The specified folder could not be found in the store.",
                )
            })?;
            if !ctx.may_open(&mailbox) {
                return Err(access_denied());
            }
            Ok((mailbox, folder))
        }
        _ => Err(EwsError::new(
            "ErrorInvalidRequest",
            "The request is invalid: unsupported folder id.",
        )),
    }
}

fn folder_nodes<'a, 'i>(parent: Option<Node<'a, 'i>>) -> Vec<Node<'a, 'i>> {
    parent
        .map(|p| {
            p.children()
                .filter(|n| {
                    n.has_tag_name((NS_T, "DistinguishedFolderId"))
                        || n.has_tag_name((NS_T, "FolderId"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An item the caller may see, by id (plain ids only).
fn find_item_by_id<'s>(
    store: &'s Store,
    ctx: &RequestContext,
    id: &str,
) -> Result<&'s Item, EwsError> {
    let item = store.items.get(id).ok_or_else(EwsError::item_not_found)?;
    if !ctx.may_open(&item.mailbox) {
        return Err(access_denied());
    }
    Ok(item)
}

/// One occurrence of a master as an item of its own.
fn occurrence_item(master: &Item, original_start: UnixMs) -> Result<Item, EwsError> {
    let fields = master
        .meeting
        .as_ref()
        .filter(|m| m.recurrence.is_some())
        .ok_or_else(EwsError::item_not_found)?;
    if fields.deleted.contains(&original_start) {
        return Err(EwsError::new(
            "ErrorCalendarOccurrenceIsDeletedFromRecurrence",
            "Occurrence with this index was previously deleted from the recurrence.",
        ));
    }
    let duration = fields.end - fields.start;
    let mut item = master.clone();
    item.id = encode_occurrence_id(&master.id, original_start);
    if let Some(m) = item.meeting.as_mut() {
        let moved = m
            .moved
            .iter()
            .find(|o| o.original_start == original_start)
            .copied();
        m.item_type = if moved.is_some() {
            ItemType::Exception
        } else {
            ItemType::Occurrence
        };
        m.recurrence_id = Some(original_start);
        m.start = moved.map_or(original_start, |o| o.start);
        m.end = moved.map_or(original_start + duration, |o| o.end);
        m.recurrence = None;
        m.moved.clear();
        m.deleted.clear();
    }
    Ok(item)
}

/// The item a `t:ItemId`, `t:OccurrenceItemId` or `t:RecurringMasterItemId` names.
fn resolve_item_id(store: &Store, ctx: &RequestContext, node: Node) -> Result<Item, EwsError> {
    match node.tag_name().name() {
        "ItemId" => {
            let id = node.attribute("Id").unwrap_or("");
            if let Some((master, start)) = decode_occurrence_id(id) {
                let master = find_item_by_id(store, ctx, &master)?;
                return occurrence_item(master, start);
            }
            find_item_by_id(store, ctx, id).cloned()
        }
        "OccurrenceItemId" => {
            let master = find_item_by_id(
                store,
                ctx,
                node.attribute("RecurringMasterId").unwrap_or(""),
            )?;
            let index: u32 = node
                .attribute("InstanceIndex")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let fields = master
                .meeting
                .as_ref()
                .filter(|m| m.recurrence.is_some())
                .ok_or_else(EwsError::item_not_found)?;
            let out_of_range = || {
                EwsError::new(
                    "ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange",
                    "The occurrence index is out of recurrence range.",
                )
            };
            if index == 0 {
                return Err(out_of_range());
            }
            let recurrence = fields.recurrence.as_ref().ok_or_else(out_of_range)?;
            let zone = Some(fields.time_zone.as_str()).filter(|z| !z.is_empty());
            let occurrences = vmr_core::recurrence::occurrences(
                recurrence,
                fields.start,
                fields.end,
                zone,
                fields.start - 1,
                i64::MAX,
                usize::try_from(index).unwrap_or(usize::MAX),
            )
            .map_err(|_| out_of_range())?;
            let occurrence = occurrences
                .into_iter()
                .find(|o| o.index + 1 == index)
                .ok_or_else(out_of_range)?;
            occurrence_item(master, occurrence.original_start)
        }
        "RecurringMasterItemId" => {
            let id = node.attribute("OccurrenceId").unwrap_or("");
            let master = decode_occurrence_id(id)
                .map(|(m, _)| m)
                .ok_or_else(EwsError::item_not_found)?;
            find_item_by_id(store, ctx, &master).cloned()
        }
        _ => Err(EwsError::item_not_found()),
    }
}

/// A requested folder shape (`BaseShape` and the `folder:` fields of `AdditionalProperties`).
struct FolderShape {
    base: String,
    fields: Vec<String>,
}

impl FolderShape {
    fn parse(shape: Option<Node>) -> FolderShape {
        let base = shape
            .and_then(|s| child_text(s, NS_T, "BaseShape"))
            .unwrap_or("IdOnly")
            .trim()
            .to_owned();
        let fields = shape
            .and_then(|s| child(s, NS_T, "AdditionalProperties"))
            .map(|additional| {
                children(additional, NS_T, "FieldURI")
                    .filter_map(|path| path.attribute("FieldURI"))
                    .map(|uri| uri.rsplit(':').next().unwrap_or(uri).to_owned())
                    .collect()
            })
            .unwrap_or_default();
        FolderShape { base, fields }
    }

    /// `Default` is FolderId, DisplayName, TotalCount, ChildFolderCount and UnreadCount;
    /// `AllProperties` adds the rest this server keeps.
    fn wants(&self, name: &str) -> bool {
        if self.fields.iter().any(|f| f == name) {
            return true;
        }
        match self.base.as_str() {
            "AllProperties" => true,
            "Default" => matches!(
                name,
                "DisplayName" | "TotalCount" | "ChildFolderCount" | "UnreadCount"
            ),
            _ => false,
        }
    }
}

/// Writes one folder (`t:Folder` or `t:CalendarFolder`) with the properties `shape` asks for,
/// in the element order of `BaseFolderType` then `FolderType`. The caller reached the mailbox as
/// its owner (impersonation) or with full access, so every effective right is granted.
fn write_folder(
    w: &mut XmlWriter,
    store: &Store,
    mailbox: &str,
    folder: FolderName,
    shape: &FolderShape,
) {
    let items = store.folder_items(mailbox, folder);
    let element = folder.element();
    w.start(element, &[]);
    let id = store.folder_id(mailbox, folder);
    w.empty(
        "t:FolderId",
        &[("Id", &id), ("ChangeKey", FOLDER_CHANGE_KEY)],
    );
    if shape.wants("ParentFolderId") {
        // The mailbox root is its own parent, as in MAPI.
        let parent = store.folder_id(mailbox, folder.parent().unwrap_or(folder));
        w.empty(
            "t:ParentFolderId",
            &[("Id", &parent), ("ChangeKey", "AQAAAA==")],
        );
    }
    if shape.wants("FolderClass") {
        if let Some(class) = folder.folder_class() {
            w.text("t:FolderClass", class);
        }
    }
    if shape.wants("DisplayName") {
        w.text("t:DisplayName", folder.display_name());
    }
    if shape.wants("TotalCount") {
        w.text("t:TotalCount", &items.len().to_string());
    }
    if shape.wants("ChildFolderCount") {
        w.text("t:ChildFolderCount", &folder.children().count().to_string());
    }
    if shape.wants("EffectiveRights") {
        w.start("t:EffectiveRights", &[]);
        for right in [
            "t:CreateAssociated",
            "t:CreateContents",
            "t:CreateHierarchy",
            "t:Delete",
            "t:Modify",
            "t:Read",
            "t:ViewPrivateItems",
        ] {
            w.text(right, "true");
        }
        w.end("t:EffectiveRights");
    }
    if shape.wants("DistinguishedFolderId") {
        w.text("t:DistinguishedFolderId", folder.distinguished_id());
    }
    // UnreadCount belongs to FolderType (and TasksFolderType, which extends it).
    if matches!(element, "t:Folder" | "t:TasksFolder") && shape.wants("UnreadCount") {
        let unread = items.iter().filter(|i| !i.is_read).count();
        w.text("t:UnreadCount", &unread.to_string());
    }
    w.end(element);
}

/// The change key every folder carries (folders here never change).
const FOLDER_CHANGE_KEY: &str = "AQAAABYAAAA=";

/// Opens the `m:RootFolder` of a paged FindItem/FindFolder answer: `next` is the offset after
/// this page, `total` the size of the whole view.
fn start_root_folder(r: &mut Response, next: usize, total: usize) {
    r.w.start(
        "m:RootFolder",
        &[
            ("IndexedPagingOffset", &next.to_string()),
            ("TotalItemsInView", &total.to_string()),
            (
                "IncludesLastItemInRange",
                if next >= total { "true" } else { "false" },
            ),
        ],
    );
}

fn get_folder(server: &ExchangeServer, ctx: &RequestContext, op: Node, r: &mut Response) {
    let store = server.store();
    let shape = FolderShape::parse(child(op, NS_M, "FolderShape"));
    for node in folder_nodes(child(op, NS_M, "FolderIds")) {
        match resolve_folder(&store, ctx, node) {
            Ok((mailbox, folder)) => {
                r.success();
                r.w.start("m:Folders", &[]);
                write_folder(&mut r.w, &store, &mailbox, folder, &shape);
                r.w.end("m:Folders");
                r.close();
            }
            Err(e) => r.error_message(&e, false),
        }
    }
}

/// The folders below `folder`: its children (`Shallow`) or all descendants, depth first
/// (`Deep`).
fn folders_below(folder: FolderName, deep: bool) -> Vec<FolderName> {
    let mut found = Vec::new();
    for child_folder in folder.children() {
        found.push(child_folder);
        if deep {
            found.extend(folders_below(child_folder, true));
        }
    }
    found
}

fn find_folder(server: &ExchangeServer, ctx: &RequestContext, op: Node, r: &mut Response) {
    let store = server.store();
    let shape = FolderShape::parse(child(op, NS_M, "FolderShape"));
    let traversal = op.attribute("Traversal").unwrap_or("Shallow");
    if child(op, NS_M, "Restriction").is_some() {
        r.error_message(
            &EwsError::new(
                "ErrorUnsupportedQueryFilter",
                "The query filter is not supported for FindFolder by this server.",
            ),
            false,
        );
        return;
    }
    let view = child(op, NS_M, "IndexedPageFolderView");
    let offset = view
        .and_then(|v| v.attribute("Offset"))
        .and_then(|o| o.parse::<usize>().ok())
        .unwrap_or(0);
    let max = view
        .and_then(|v| v.attribute("MaxEntriesReturned"))
        .and_then(|o| o.parse::<usize>().ok());
    let from_end = view.and_then(|v| v.attribute("BasePoint")) == Some("End");
    for node in folder_nodes(child(op, NS_M, "ParentFolderIds")) {
        let (mailbox, folder) = match resolve_folder(&store, ctx, node) {
            Ok(found) => found,
            Err(e) => {
                r.error_message(&e, false);
                continue;
            }
        };
        // No folder here is ever soft-deleted.
        let mut found = match traversal {
            "SoftDeleted" => Vec::new(),
            _ => folders_below(folder, traversal == "Deep"),
        };
        let total = found.len();
        if from_end {
            found.reverse();
        }
        let page: Vec<FolderName> = found
            .into_iter()
            .skip(offset)
            .take(max.unwrap_or(usize::MAX))
            .collect();
        r.success();
        start_root_folder(r, offset + page.len(), total);
        r.w.start("t:Folders", &[]);
        for found_folder in page {
            write_folder(&mut r.w, &store, &mailbox, found_folder, &shape);
        }
        r.w.end("t:Folders");
        r.w.end("m:RootFolder");
        r.close();
    }
}

fn sync_folder_items(server: &ExchangeServer, ctx: &RequestContext, op: Node, r: &mut Response) {
    let store = server.store();
    let shape = child(op, NS_M, "ItemShape")
        .map(ItemShape::parse)
        .unwrap_or_else(ItemShape::id_only);
    let Some(folder_node) = folder_nodes(child(op, NS_M, "SyncFolderId"))
        .into_iter()
        .next()
    else {
        r.error_message(
            &EwsError::new(
                "ErrorSyncFolderNotFound",
                "The specified folder could not be found in the store.",
            ),
            false,
        );
        return;
    };
    let (mailbox, folder) = match resolve_folder(&store, ctx, folder_node) {
        Ok(found) => found,
        Err(mut e) => {
            if e.code == "ErrorFolderNotFound" {
                e.code = "ErrorSyncFolderNotFound";
            }
            r.error_message(&e, false);
            return;
        }
    };
    let max: usize = child_text(op, NS_M, "MaxChangesReturned")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(512)
        .clamp(1, 512);
    let position = match child_text(op, NS_M, "SyncState").map(str::trim) {
        None | Some("") => 0,
        Some(state) => match decode_sync_state(state, &mailbox, folder) {
            Some(p) => p,
            None => {
                r.error_message(
                    &EwsError::new(
                        "ErrorInvalidSyncStateData",
                        "Synchronization state data is corrupt or otherwise invalid.",
                    ),
                    false,
                );
                return;
            }
        },
    };
    let Some(log) = store
        .mailboxes
        .get(&mailbox)
        .and_then(|m| m.folder(folder))
        .map(|f| &f.log)
    else {
        r.error_message(
            &EwsError::new(
                "ErrorSyncFolderNotFound",
                "The specified folder could not be found in the store.",
            ),
            false,
        );
        return;
    };
    let position = position.min(log.len());
    let mut order: Vec<&str> = Vec::new();
    let mut seen: HashMap<&str, (ChangeKind, ChangeKind)> = HashMap::new();
    let mut consumed = position;
    for entry in &log[position..] {
        let id = entry.item_id.as_str();
        if let Some(kinds) = seen.get_mut(id) {
            kinds.1 = entry.change;
        } else {
            if order.len() >= max {
                break;
            }
            order.push(id);
            seen.insert(id, (entry.change, entry.change));
        }
        consumed += 1;
    }
    let complete = consumed >= log.len();
    r.success();
    r.w.text(
        "m:SyncState",
        &encode_sync_state(&mailbox, folder, consumed),
    );
    r.w.text(
        "m:IncludesLastItemInRange",
        if complete { "true" } else { "false" },
    );
    r.w.start("m:Changes", &[]);
    for id in order {
        let (first, last) = seen
            .get(id)
            .copied()
            .unwrap_or((ChangeKind::Update, ChangeKind::Update));
        let current = store
            .items
            .get(id)
            .filter(|i| i.folder == folder && i.mailbox == mailbox);
        match (first, last, current) {
            (ChangeKind::Create, ChangeKind::Delete, _) => {}
            (_, ChangeKind::Delete, _) | (_, _, None) => {
                r.w.start("t:Delete", &[]);
                r.w.empty("t:ItemId", &[("Id", id)]);
                r.w.end("t:Delete");
            }
            (ChangeKind::Create, _, Some(item)) => {
                r.w.start("t:Create", &[]);
                write_item(&mut r.w, &store, item, &shape, true);
                r.w.end("t:Create");
            }
            (_, _, Some(item)) => {
                r.w.start("t:Update", &[]);
                write_item(&mut r.w, &store, item, &shape, true);
                r.w.end("t:Update");
            }
        }
    }
    r.w.end("m:Changes");
    r.close();
}

fn get_item(server: &ExchangeServer, ctx: &RequestContext, op: Node, r: &mut Response) {
    let store = server.store();
    let shape = child(op, NS_M, "ItemShape")
        .map(ItemShape::parse)
        .unwrap_or_else(ItemShape::id_only);
    let Some(ids) = child(op, NS_M, "ItemIds") else {
        return;
    };
    for node in ids.children().filter(|n| n.is_element()) {
        match resolve_item_id(&store, ctx, node) {
            Ok(item) => {
                r.success();
                r.w.start("m:Items", &[]);
                write_item(&mut r.w, &store, &item, &shape, false);
                r.w.end("m:Items");
                r.close();
            }
            Err(e) => r.error_message(&e, true),
        }
    }
}

/// A FindItem restriction, evaluated against items.
enum Restriction {
    Compare {
        path: RestrictionPath,
        op: &'static str,
        constant: String,
    },
    And(Vec<Restriction>),
    Or(Vec<Restriction>),
    Not(Box<Restriction>),
}

enum RestrictionPath {
    MeetingProperty(u32),
    Field(String),
}

fn parse_restriction(node: Node) -> Result<Restriction, EwsError> {
    let unsupported = |what: &str| {
        EwsError::new(
            "ErrorUnsupportedPathForQuery",
            format!("The property path {what} is not supported for restrictions by this server."),
        )
    };
    let name = node.tag_name().name();
    match name {
        "And" | "Or" => {
            let parts = node
                .children()
                .filter(|n| n.is_element())
                .map(parse_restriction)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if name == "And" {
                Restriction::And(parts)
            } else {
                Restriction::Or(parts)
            })
        }
        "Not" => {
            let inner = node
                .children()
                .find(|n| n.is_element())
                .ok_or_else(|| unsupported("Not"))?;
            Ok(Restriction::Not(Box::new(parse_restriction(inner)?)))
        }
        "IsEqualTo"
        | "IsNotEqualTo"
        | "IsGreaterThan"
        | "IsGreaterThanOrEqualTo"
        | "IsLessThan"
        | "IsLessThanOrEqualTo" => {
            let op: &'static str = match name {
                "IsEqualTo" => "eq",
                "IsNotEqualTo" => "ne",
                "IsGreaterThan" => "gt",
                "IsGreaterThanOrEqualTo" => "ge",
                "IsLessThan" => "lt",
                _ => "le",
            };
            let path_node = node
                .children()
                .find(|n| n.is_element())
                .ok_or_else(|| unsupported(name))?;
            let path = match path_node.tag_name().name() {
                "ExtendedFieldURI" => {
                    let field = parse_extended(path_node);
                    RestrictionPath::MeetingProperty(
                        field
                            .meeting_property
                            .ok_or_else(|| unsupported("ExtendedFieldURI"))?,
                    )
                }
                "FieldURI" => {
                    let uri = path_node.attribute("FieldURI").unwrap_or("");
                    match uri {
                        "item:Subject"
                        | "item:ItemClass"
                        | "calendar:Start"
                        | "calendar:End"
                        | "item:DateTimeReceived" => RestrictionPath::Field(uri.to_owned()),
                        other => return Err(unsupported(other)),
                    }
                }
                other => return Err(unsupported(other)),
            };
            let constant = child(node, NS_T, "FieldURIOrConstant")
                .and_then(|c| child(c, NS_T, "Constant"))
                .and_then(|c| c.attribute("Value"))
                .ok_or_else(|| unsupported("FieldURIOrConstant without Constant"))?
                .to_owned();
            Ok(Restriction::Compare { path, op, constant })
        }
        other => Err(unsupported(other)),
    }
}

fn matches_restriction(item: &Item, restriction: &Restriction) -> bool {
    match restriction {
        Restriction::And(parts) => parts.iter().all(|p| matches_restriction(item, p)),
        Restriction::Or(parts) => parts.iter().any(|p| matches_restriction(item, p)),
        Restriction::Not(inner) => !matches_restriction(item, inner),
        Restriction::Compare { path, op, constant } => {
            let ordering = match path {
                RestrictionPath::MeetingProperty(id) => {
                    let Some(m) = item.meeting.as_ref() else {
                        return *op == "ne";
                    };
                    let value = if *id == 35 {
                        m.goid.clone()
                    } else {
                        m.global_object_id()
                    };
                    let wanted = B64.decode(constant.trim()).unwrap_or_default();
                    value.cmp(&wanted)
                }
                RestrictionPath::Field(uri) => match uri.as_str() {
                    "item:Subject" => item.subject.as_str().cmp(constant.as_str()),
                    "item:ItemClass" => item.item_class.as_str().cmp(constant.as_str()),
                    _ => {
                        let value = match uri.as_str() {
                            "calendar:Start" => item.meeting.as_ref().map(|m| m.start),
                            "calendar:End" => item.meeting.as_ref().map(|m| m.end),
                            _ => Some(item.received),
                        };
                        match (value, parse_time(constant)) {
                            (Some(v), Some(c)) => v.cmp(&c),
                            _ => return false,
                        }
                    }
                },
            };
            use std::cmp::Ordering::*;
            match *op {
                "eq" => ordering == Equal,
                "ne" => ordering != Equal,
                "gt" => ordering == Greater,
                "ge" => ordering != Less,
                "lt" => ordering == Less,
                _ => ordering != Greater,
            }
        }
    }
}

/// One `t:FieldOrder` of a FindItem `SortOrder`: the property and whether it is descending.
struct SortKey {
    field: String,
    descending: bool,
}

/// Reads `m:SortOrder` (the properties this server can sort on).
fn parse_sort_order(op: Node) -> Result<Vec<SortKey>, EwsError> {
    let Some(order) = child(op, NS_M, "SortOrder") else {
        return Ok(Vec::new());
    };
    children(order, NS_T, "FieldOrder")
        .map(|field_order| {
            let uri = child(field_order, NS_T, "FieldURI")
                .and_then(|f| f.attribute("FieldURI"))
                .unwrap_or("");
            match uri {
                "item:DateTimeReceived"
                | "item:DateTimeCreated"
                | "item:LastModifiedTime"
                | "item:Subject"
                | "item:ItemClass"
                | "calendar:Start"
                | "calendar:End" => Ok(SortKey {
                    field: uri.to_owned(),
                    descending: field_order.attribute("Order") == Some("Descending"),
                }),
                other => Err(EwsError::new(
                    "ErrorUnsupportedPathForSortGroup",
                    format!("The property path {other} cannot be used for sorting by this server."),
                )),
            }
        })
        .collect()
}

/// Compares two items by one sort key (items without the property sort first).
fn compare_by(a: &Item, b: &Item, key: &SortKey) -> std::cmp::Ordering {
    let ordering = match key.field.as_str() {
        "item:Subject" => a.subject.cmp(&b.subject),
        "item:ItemClass" => a.item_class.cmp(&b.item_class),
        "item:DateTimeCreated" => a.created.cmp(&b.created),
        "item:LastModifiedTime" => a.last_modified.cmp(&b.last_modified),
        "calendar:Start" => a
            .meeting
            .as_ref()
            .map(|m| m.start)
            .cmp(&b.meeting.as_ref().map(|m| m.start)),
        "calendar:End" => a
            .meeting
            .as_ref()
            .map(|m| m.end)
            .cmp(&b.meeting.as_ref().map(|m| m.end)),
        _ => a.received.cmp(&b.received),
    };
    if key.descending {
        ordering.reverse()
    } else {
        ordering
    }
}

fn find_item(server: &ExchangeServer, ctx: &RequestContext, op: Node, r: &mut Response) {
    let store = server.store();
    let shape = child(op, NS_M, "ItemShape")
        .map(ItemShape::parse)
        .unwrap_or_else(ItemShape::id_only);
    let restriction = match child(op, NS_M, "Restriction")
        .and_then(|n| n.children().find(|c| c.is_element()))
        .map(parse_restriction)
        .transpose()
    {
        Ok(r) => r,
        Err(e) => {
            r.error_message(&e, false);
            return;
        }
    };
    let sort_order = match parse_sort_order(op) {
        Ok(keys) => keys,
        Err(e) => {
            r.error_message(&e, false);
            return;
        }
    };
    let calendar_view = child(op, NS_M, "CalendarView");
    let indexed = child(op, NS_M, "IndexedPageItemView");
    for node in folder_nodes(child(op, NS_M, "ParentFolderIds")) {
        let (mailbox, folder) = match resolve_folder(&store, ctx, node) {
            Ok(found) => found,
            Err(e) => {
                r.error_message(&e, false);
                continue;
            }
        };
        let items = store.folder_items(&mailbox, folder);
        if let Some(view) = calendar_view {
            let start = view.attribute("StartDate").and_then(parse_time);
            let end = view.attribute("EndDate").and_then(parse_time);
            let (Some(start), Some(end)) = (start, end) else {
                r.error_message(
                    &EwsError::new(
                        "ErrorInvalidRequest",
                        "The CalendarView needs a StartDate and an EndDate.",
                    ),
                    false,
                );
                continue;
            };
            let max: Option<usize> = view
                .attribute("MaxEntriesReturned")
                .and_then(|v| v.parse().ok());
            let mut found: Vec<Item> = Vec::new();
            for item in items {
                let Some(m) = item.meeting.as_ref() else {
                    continue;
                };
                match super::flows::series_of(m) {
                    Some(series) => {
                        if let Ok(occurrences) = series.occurrences(start, end, 10_000) {
                            for o in occurrences {
                                if let Ok(occ) = occurrence_item(item, o.original_start) {
                                    found.push(occ);
                                }
                            }
                        }
                    }
                    None => {
                        if m.start < end
                            && (m.end > start || (m.start == m.end && m.start >= start))
                        {
                            found.push(item.clone());
                        }
                    }
                }
            }
            found.sort_by_key(|i| i.meeting.as_ref().map_or(0, |m| m.start));
            let total = found.len();
            let truncated = max.is_some_and(|m| total > m);
            if let Some(m) = max {
                found.truncate(m);
            }
            r.success();
            r.w.start(
                "m:RootFolder",
                &[
                    ("TotalItemsInView", &total.to_string()),
                    (
                        "IncludesLastItemInRange",
                        if truncated { "false" } else { "true" },
                    ),
                ],
            );
            r.w.start("t:Items", &[]);
            for item in &found {
                write_item(&mut r.w, &store, item, &shape, true);
            }
            r.w.end("t:Items");
            r.w.end("m:RootFolder");
            r.close();
            continue;
        }
        let mut selected: Vec<&Item> = items
            .into_iter()
            .filter(|i| {
                restriction
                    .as_ref()
                    .is_none_or(|res| matches_restriction(i, res))
            })
            .collect();
        // Without a SortOrder, newest first; ties keep arrival order within the sort keys.
        selected.sort_by(|a, b| b.received.cmp(&a.received).then(b.number.cmp(&a.number)));
        if !sort_order.is_empty() {
            selected.sort_by(|a, b| {
                sort_order
                    .iter()
                    .map(|key| compare_by(a, b, key))
                    .find(|o| o.is_ne())
                    .unwrap_or_else(|| a.number.cmp(&b.number))
            });
        }
        let total = selected.len();
        let (offset, max, from_end) = indexed
            .map(|v| {
                (
                    v.attribute("Offset")
                        .and_then(|o| o.parse::<usize>().ok())
                        .unwrap_or(0),
                    v.attribute("MaxEntriesReturned")
                        .and_then(|o| o.parse::<usize>().ok()),
                    v.attribute("BasePoint") == Some("End"),
                )
            })
            .unwrap_or((0, None, false));
        if from_end {
            selected.reverse();
        }
        let page: Vec<&Item> = selected
            .into_iter()
            .skip(offset)
            .take(max.unwrap_or(usize::MAX))
            .collect();
        r.success();
        start_root_folder(r, offset + page.len(), total);
        r.w.start("t:Items", &[]);
        for item in page {
            write_item(&mut r.w, &store, item, &shape, true);
        }
        r.w.end("t:Items");
        r.w.end("m:RootFolder");
        r.close();
    }
}

fn body_of(node: Node) -> Option<Body> {
    let body = child(node, NS_T, "Body")?;
    Some(Body {
        html: body.attribute("BodyType") == Some("HTML"),
        content: body.text().unwrap_or("").to_owned(),
    })
}

fn disposition(op: Node) -> Disposition {
    match op.attribute("MessageDisposition") {
        Some("SaveOnly") => Disposition::SaveOnly,
        Some("SendOnly") => Disposition::SendOnly,
        _ => Disposition::SendAndSaveCopy,
    }
}

fn mailboxes_in(node: Option<Node>) -> Vec<String> {
    node.map(|n| {
        n.descendants()
            .filter(|d| d.has_tag_name((NS_T, "EmailAddress")))
            .filter_map(|d| d.text())
            .map(normalize_email)
            .collect()
    })
    .unwrap_or_default()
}

fn create_item(server: &ExchangeServer, ctx: &RequestContext, op: Node, r: &mut Response) {
    let Some(items) = child(op, NS_M, "Items") else {
        return;
    };
    for item in items.children().filter(|n| n.is_element()) {
        let name = item.tag_name().name();
        let result: Result<Option<String>, EwsError> = match name {
            "AcceptItem" | "TentativelyAcceptItem" | "DeclineItem" | "RemoveItem" => {
                let reference = child(item, NS_T, "ReferenceItemId")
                    .and_then(|n| n.attribute("Id"))
                    .unwrap_or("")
                    .to_owned();
                let owner = {
                    let store = server.store();
                    find_item_by_id(&store, ctx, &reference).map(|i| i.mailbox.clone())
                };
                owner.and_then(|mailbox| {
                    let answer = match name {
                        "AcceptItem" => Answer::Accept,
                        "TentativelyAcceptItem" => Answer::Tentative,
                        "DeclineItem" => Answer::Decline,
                        _ => return server.remove_cancelled(&mailbox, &reference).map(|()| None),
                    };
                    server
                        .answer(&mailbox, &reference, answer, body_of(item), disposition(op))
                        .map(|()| None)
                })
            }
            "CalendarItem" => create_calendar_item(server, ctx, op, item),
            "Message" => create_message(server, ctx, op, item),
            other => Err(EwsError::new(
                "ErrorInvalidRequest",
                format!("The simulated Exchange server cannot create a {other}."),
            )),
        };
        match result {
            Ok(created) => {
                r.success();
                match created {
                    Some(id) => {
                        let store = server.store();
                        r.w.start("m:Items", &[]);
                        if let Some(item) = store.items.get(&id) {
                            let element = format!("t:{}", item.kind.element());
                            r.w.start(&element, &[]);
                            write_item_id(&mut r.w, item);
                            r.w.end(&element);
                        }
                        r.w.end("m:Items");
                    }
                    None => r.w.empty("m:Items", &[]),
                }
                r.close();
            }
            Err(e) => r.error_message(&e, true),
        }
    }
}

fn create_calendar_item(
    server: &ExchangeServer,
    ctx: &RequestContext,
    op: Node,
    item: Node,
) -> Result<Option<String>, EwsError> {
    let organizer = ctx.own_mailbox().ok_or_else(|| {
        EwsError::new(
            "ErrorMissingEmailAddress",
            "When making a request as an account that does not have a mailbox, you must specify the mailbox primary SMTP address.",
        )
    })?;
    let start = child_text(item, NS_T, "Start").and_then(parse_time);
    let end = child_text(item, NS_T, "End").and_then(parse_time);
    let (Some(start), Some(end)) = (start, end) else {
        return Err(EwsError::new(
            "ErrorInvalidRequest",
            "A calendar item needs Start and End.",
        ));
    };
    let person = {
        let store = server.store();
        store
            .mailboxes
            .get(&organizer)
            .map(|m| m.person())
            .unwrap_or(Person {
                name: organizer.clone(),
                email: organizer.clone(),
            })
    };
    let meeting = SendMeeting {
        organizer: person,
        subject: child_text(item, NS_T, "Subject").unwrap_or("").to_owned(),
        body: body_of(item).unwrap_or_default(),
        start,
        end,
        time_zone: child_text(item, NS_T, "StartTimeZoneId")
            .or_else(|| child(item, NS_T, "StartTimeZone").and_then(|z| z.attribute("Id")))
            .unwrap_or("UTC")
            .to_owned(),
        recurrence: child(item, NS_T, "Recurrence").and_then(parse_recurrence),
        required: mailboxes_in(child(item, NS_T, "RequiredAttendees")),
        optional: mailboxes_in(child(item, NS_T, "OptionalAttendees")),
        resources: mailboxes_in(child(item, NS_T, "Resources")),
    };
    let send = !matches!(
        op.attribute("SendMeetingInvitations"),
        None | Some("SendToNone")
    );
    let meeting = if send {
        meeting
    } else {
        SendMeeting {
            required: Vec::new(),
            optional: Vec::new(),
            resources: Vec::new(),
            ..meeting
        }
    };
    let uid = server
        .send_meeting(meeting)
        .map_err(|e| EwsError::new("ErrorInvalidRequest", e.to_string()))?;
    let store = server.store();
    Ok(store.meetings.get(&uid).map(|m| m.organizer_item.clone()))
}

fn create_message(
    server: &ExchangeServer,
    ctx: &RequestContext,
    op: Node,
    item: Node,
) -> Result<Option<String>, EwsError> {
    let sender = ctx.own_mailbox().ok_or_else(access_denied)?;
    let now = server.now();
    let mut store = server.store();
    let from = store
        .mailboxes
        .get(&sender)
        .map(|m| m.person())
        .ok_or_else(access_denied)?;
    let recipients = mailboxes_in(child(item, NS_T, "ToRecipients"));
    let mut message = blank_item(
        ItemKind::Message,
        child_text(item, NS_T, "ItemClass").unwrap_or("IPM.Note"),
        now,
    );
    message.subject = child_text(item, NS_T, "Subject").unwrap_or("").to_owned();
    message.body = body_of(item).unwrap_or_default();
    message.from = Some(from);
    message.to = recipients
        .iter()
        .map(|e| Person {
            name: store
                .mailboxes
                .get(e)
                .map_or_else(|| e.clone(), |m| m.name.clone()),
            email: e.clone(),
        })
        .collect();
    match disposition(op) {
        Disposition::SaveOnly => {
            let (mailbox, folder) = folder_nodes(child(op, NS_M, "SavedItemFolderId"))
                .into_iter()
                .next()
                .map(|n| resolve_folder(&store, ctx, n))
                .transpose()?
                .unwrap_or((sender.clone(), FolderName::SentItems));
            message.is_read = true;
            Ok(store.create_item(&mailbox, folder, message, now))
        }
        d => {
            for recipient in &recipients {
                if store.mailboxes.contains_key(recipient) {
                    store.create_item(recipient, FolderName::Inbox, message.clone(), now);
                }
            }
            if d == Disposition::SendAndSaveCopy {
                message.is_read = true;
                store.create_item(&sender, FolderName::SentItems, message, now);
            }
            Ok(None)
        }
    }
}

fn update_item(server: &ExchangeServer, ctx: &RequestContext, op: Node, r: &mut Response) {
    let send = !matches!(
        op.attribute("SendMeetingInvitationsOrCancellations"),
        None | Some("SendToNone")
    );
    let never_overwrite = op.attribute("ConflictResolution") == Some("NeverOverwrite");
    let Some(changes) = child(op, NS_M, "ItemChanges") else {
        return;
    };
    for change in children(changes, NS_T, "ItemChange") {
        let result = (|| -> Result<String, EwsError> {
            let id_node = child(change, NS_T, "ItemId").ok_or_else(|| {
                EwsError::new(
                    "ErrorInvalidRequest",
                    "Only ItemId is supported in an ItemChange by this server.",
                )
            })?;
            let id = id_node.attribute("Id").unwrap_or("").to_owned();
            let item = {
                let store = server.store();
                find_item_by_id(&store, ctx, &id)?.clone()
            };
            if let Some(key) = id_node.attribute("ChangeKey") {
                if never_overwrite && key != item.change_key() {
                    return Err(EwsError::new(
                        "ErrorIrresolvableConflict",
                        "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
                    ));
                }
            }
            let mut update = MeetingUpdate::default();
            let mut is_read = None;
            for set in child(change, NS_T, "Updates")
                .map(|u| u.children().filter(|n| n.is_element()).collect::<Vec<_>>())
                .unwrap_or_default()
            {
                let field = child(set, NS_T, "FieldURI")
                    .and_then(|f| f.attribute("FieldURI"))
                    .unwrap_or("");
                let value_item = set
                    .children()
                    .find(|n| n.is_element() && !n.has_tag_name((NS_T, "FieldURI")));
                let kind = set.tag_name().name();
                match (kind, field, value_item) {
                    ("SetItemField" | "AppendToItemField", "item:Subject", Some(v)) => {
                        update.subject =
                            Some(child_text(v, NS_T, "Subject").unwrap_or("").to_owned());
                    }
                    ("SetItemField", "item:Body", Some(v)) => update.body = body_of(v),
                    ("AppendToItemField", "item:Body", Some(v)) => {
                        let mut body = item.body.clone();
                        if let Some(extra) = body_of(v) {
                            body.content.push_str(&extra.content);
                        }
                        update.body = Some(body);
                    }
                    ("SetItemField", "calendar:Start", Some(v)) => {
                        update.start = child_text(v, NS_T, "Start").and_then(parse_time);
                    }
                    ("SetItemField", "calendar:End", Some(v)) => {
                        update.end = child_text(v, NS_T, "End").and_then(parse_time);
                    }
                    ("SetItemField", "calendar:Recurrence", Some(v)) => {
                        update.recurrence =
                            Some(child(v, NS_T, "Recurrence").and_then(parse_recurrence));
                    }
                    ("DeleteItemField", "calendar:Recurrence", _) => update.recurrence = Some(None),
                    ("SetItemField", "message:IsRead", Some(v)) => {
                        is_read = child_text(v, NS_T, "IsRead").map(|t| t.trim() == "true");
                    }
                    (_, other, _) => {
                        return Err(EwsError::new(
                            "ErrorInvalidPropertySet",
                            format!("The simulated Exchange server cannot change {other}."),
                        ))
                    }
                }
            }
            let organizer_uid = item
                .meeting
                .as_ref()
                .filter(|m| m.is_organizer && item.kind == ItemKind::CalendarItem)
                .map(|m| m.uid());
            match organizer_uid {
                Some(uid) => server
                    .organizer_item_update(&uid, update, send)
                    .map_err(|e| EwsError::new("ErrorInvalidRequest", e.to_string()))?,
                None => {
                    let now = server.now();
                    let mut store = server.store();
                    store.update_item(&id, now, |i| {
                        if let Some(s) = update.subject {
                            i.subject = s;
                        }
                        if let Some(b) = update.body {
                            i.body = b;
                        }
                        if let Some(read) = is_read {
                            i.is_read = read;
                        }
                        if let Some(m) = i.meeting.as_mut() {
                            if let Some(s) = update.start {
                                m.start = s;
                            }
                            if let Some(e) = update.end {
                                m.end = e;
                            }
                        }
                    });
                }
            }
            Ok(id)
        })();
        match result {
            Ok(id) => {
                let store = server.store();
                r.success();
                r.w.start("m:Items", &[]);
                if let Some(item) = store.items.get(&id) {
                    let element = format!("t:{}", item.kind.element());
                    r.w.start(&element, &[]);
                    write_item_id(&mut r.w, item);
                    r.w.end(&element);
                }
                r.w.end("m:Items");
                r.w.start("m:ConflictResults", &[]);
                r.w.text("t:Count", "0");
                r.w.end("m:ConflictResults");
                r.close();
            }
            Err(e) => r.error_message(&e, true),
        }
    }
}

fn delete_item(server: &ExchangeServer, ctx: &RequestContext, op: Node, r: &mut Response) {
    let move_to_deleted = op.attribute("DeleteType") == Some("MoveToDeletedItems");
    let send_cancellations = !matches!(
        op.attribute("SendMeetingCancellations"),
        None | Some("SendToNone")
    );
    let Some(ids) = child(op, NS_M, "ItemIds") else {
        return;
    };
    for node in ids.children().filter(|n| n.is_element()) {
        let id = node.attribute("Id").unwrap_or("").to_owned();
        let result = (|| -> Result<(), EwsError> {
            let item = {
                let store = server.store();
                find_item_by_id(&store, ctx, &id)?.clone()
            };
            let organizer_uid = item
                .meeting
                .as_ref()
                .filter(|m| m.is_organizer && item.kind == ItemKind::CalendarItem)
                .map(|m| m.uid());
            if let (Some(uid), true) = (organizer_uid, send_cancellations) {
                return server
                    .organizer_cancel(&uid)
                    .map_err(|e| EwsError::new("ErrorInvalidRequest", e.to_string()));
            }
            let now = server.now();
            let mut store = server.store();
            if move_to_deleted && item.folder != FolderName::DeletedItems {
                store.move_item(&id, FolderName::DeletedItems, now);
            } else {
                store.delete_item(&id, now);
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                r.success();
                r.close();
            }
            Err(e) => r.error_message(&e, false),
        }
    }
}

fn subscribe(server: &ExchangeServer, ctx: &RequestContext, op: Node, r: &mut Response) {
    let mut store = server.store();
    let request = op.children().find(|n| n.is_element());
    let Some(request) = request else { return };
    let kind = match request.tag_name().name() {
        "PullSubscriptionRequest" => SubscriptionKind::Pull,
        "StreamingSubscriptionRequest" => SubscriptionKind::Streaming,
        _ => {
            r.error_message(
                &EwsError::new(
                    "ErrorInvalidSubscriptionRequest",
                    "Push subscriptions are not available on this server; use pull or streaming notifications.",
                ),
                false,
            );
            return;
        }
    };
    let all = request.attribute("SubscribeToAllFolders") == Some("true");
    let mut mailbox: Option<String> = None;
    let mut folders = Vec::new();
    for node in folder_nodes(child(request, NS_T, "FolderIds")) {
        match resolve_folder(&store, ctx, node) {
            Ok((m, f)) => {
                if mailbox.as_ref().is_some_and(|existing| *existing != m) {
                    r.error_message(
                        &EwsError::new(
                            "ErrorInvalidSubscriptionRequest",
                            "A subscription can only cover folders of one mailbox.",
                        ),
                        false,
                    );
                    return;
                }
                mailbox = Some(m);
                folders.push(f);
            }
            Err(e) => {
                r.error_message(&e, false);
                return;
            }
        }
    }
    let Some(mailbox) = mailbox.or_else(|| ctx.own_mailbox()) else {
        r.error_message(
            &EwsError::new(
                "ErrorMissingEmailAddress",
                "When making a request as an account that does not have a mailbox, you must specify the mailbox primary SMTP address for any distinguished folder Ids.",
            ),
            false,
        );
        return;
    };
    let event_types: Vec<EventKind> = child(request, NS_T, "EventTypes")
        .map(|e| {
            children(e, NS_T, "EventType")
                .filter_map(|t| t.text())
                .filter_map(|t| EventKind::from_event_type(t.trim()))
                .collect()
        })
        .unwrap_or_default();
    let id = B64.encode([&[0x26u8, 0x00][..], &rand::random::<[u8; 30]>()[..]].concat());
    let position = store.event_position();
    store.subscriptions.insert(
        id.clone(),
        Subscription {
            id: id.clone(),
            mailbox,
            kind,
            folders: if all { None } else { Some(folders) },
            event_types,
            queue: Default::default(),
            last_watermark: position,
            notify: Default::default(),
        },
    );
    r.success();
    r.w.text("m:SubscriptionId", &id);
    if kind == SubscriptionKind::Pull {
        r.w.text("m:Watermark", &encode_watermark(position));
    }
    r.close();
}

fn subscription_not_found() -> EwsError {
    EwsError::new(
        "ErrorSubscriptionNotFound",
        "The specified subscription was not found.",
    )
}

/// Writes one event element.
pub fn write_event(w: &mut XmlWriter, event: &Event, with_watermark: bool) {
    let element = format!("t:{}", event.kind.element());
    w.start(&element, &[]);
    if with_watermark {
        w.text("t:Watermark", &encode_watermark(event.sequence));
    }
    w.text("t:TimeStamp", &format_time(event.timestamp));
    w.empty(
        "t:ItemId",
        &[("Id", &event.item_id), ("ChangeKey", &event.change_key)],
    );
    w.empty(
        "t:ParentFolderId",
        &[("Id", &event.parent_folder_id), ("ChangeKey", "AQAAAA==")],
    );
    if event.kind == EventKind::Moved {
        if let Some(old) = &event.old_item_id {
            w.empty("t:OldItemId", &[("Id", old)]);
        }
        if let Some(old) = &event.old_parent_folder_id {
            w.empty(
                "t:OldParentFolderId",
                &[("Id", old), ("ChangeKey", "AQAAAA==")],
            );
        }
    }
    w.end(&element);
}

/// Most events one GetEvents answer carries before `MoreEvents` is true.
const EVENTS_PER_GET: usize = 50;

fn get_events(server: &ExchangeServer, ctx: &RequestContext, op: Node, r: &mut Response) {
    let mut store = server.store();
    let id = child_text(op, NS_M, "SubscriptionId")
        .unwrap_or("")
        .trim()
        .to_owned();
    let watermark_text = child_text(op, NS_M, "Watermark")
        .unwrap_or("")
        .trim()
        .to_owned();
    let Some(subscription) = store
        .subscriptions
        .get_mut(&id)
        .filter(|s| s.kind == SubscriptionKind::Pull && ctx.may_open(&s.mailbox))
    else {
        r.error_message(&subscription_not_found(), false);
        return;
    };
    let Some(watermark) = decode_watermark(&watermark_text) else {
        r.error_message(
            &EwsError::new(
                "ErrorInvalidWatermark",
                "The watermark used for creating this subscription was not found.",
            ),
            false,
        );
        return;
    };
    subscription.queue.retain(|e| e.sequence > watermark);
    let events: Vec<Event> = subscription
        .queue
        .iter()
        .take(EVENTS_PER_GET)
        .cloned()
        .collect();
    let more = subscription.queue.len() > events.len();
    let last = events
        .last()
        .map_or(watermark.max(subscription.last_watermark), |e| e.sequence);
    subscription.last_watermark = last;
    r.success();
    r.w.start("m:Notification", &[]);
    r.w.text("t:SubscriptionId", &id);
    r.w.text("t:PreviousWatermark", &encode_watermark(watermark));
    r.w.text("t:MoreEvents", if more { "true" } else { "false" });
    if events.is_empty() {
        r.w.start("t:StatusEvent", &[]);
        r.w.text("t:Watermark", &encode_watermark(last));
        r.w.end("t:StatusEvent");
    }
    for event in &events {
        write_event(&mut r.w, event, true);
    }
    r.w.end("m:Notification");
    r.close();
}

fn unsubscribe(server: &ExchangeServer, ctx: &RequestContext, op: Node, r: &mut Response) {
    let mut store = server.store();
    let id = child_text(op, NS_M, "SubscriptionId")
        .unwrap_or("")
        .trim()
        .to_owned();
    let allowed = store
        .subscriptions
        .get(&id)
        .is_some_and(|s| ctx.may_open(&s.mailbox));
    if allowed {
        if let Some(s) = store.subscriptions.remove(&id) {
            s.notify.notify_waiters();
        }
        r.success();
        r.close();
    } else {
        r.error_message(&subscription_not_found(), false);
    }
}

fn get_streaming_events(
    server: &ExchangeServer,
    ctx: &RequestContext,
    op: Node,
    mut r: Response,
) -> Outcome {
    let store = server.store();
    let ids: Vec<String> = child(op, NS_M, "SubscriptionIds")
        .map(|s| {
            children(s, NS_T, "SubscriptionId")
                .filter_map(|n| n.text())
                .map(|t| t.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let minutes: u32 = child_text(op, NS_M, "ConnectionTimeout")
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(30)
        .clamp(1, 30);
    let missing: Vec<&String> =
        ids.iter()
            .filter(|id| {
                !store.subscriptions.get(*id).is_some_and(|s| {
                    s.kind == SubscriptionKind::Streaming && ctx.may_open(&s.mailbox)
                })
            })
            .collect();
    if !missing.is_empty() || ids.is_empty() {
        r.error(&EwsError::new(
            "ErrorSubscriptionNotFound",
            "The specified subscription was not found.",
        ));
        if !missing.is_empty() {
            r.w.start("m:ErrorSubscriptionIds", &[]);
            for id in missing {
                r.w.text("t:SubscriptionId", id);
            }
            r.w.end("m:ErrorSubscriptionIds");
        }
        r.w.text("m:ConnectionStatus", "Closed");
        r.close();
        return Outcome::Response(r.finish());
    }
    Outcome::Streaming {
        subscriptions: ids,
        minutes,
    }
}

/// One GetStreamingEvents envelope body: notifications (if any) and the connection status.
pub fn streaming_message(notifications: &[(String, Vec<Event>)], status: Option<&str>) -> String {
    let mut r = Response::new("GetStreamingEvents");
    r.success();
    if !notifications.is_empty() {
        r.w.start("m:Notifications", &[]);
        for (id, events) in notifications {
            // Exchange writes m:Notification here (the schema says t:); see the module docs of http.
            r.w.start("m:Notification", &[]);
            r.w.text("t:SubscriptionId", id);
            for event in events {
                write_event(&mut r.w, event, false);
            }
            r.w.end("m:Notification");
        }
        r.w.end("m:Notifications");
    }
    if let Some(status) = status {
        r.w.text("m:ConnectionStatus", status);
    }
    r.close();
    r.finish()
}

/// The time as the streaming loop reads it (kept here so tests can format expectations).
pub fn timestamp(ms: UnixMs) -> String {
    format_time(ms)
}

#[cfg(test)]
mod tests {
    use super::super::flows::goid_from_uid;
    use super::*;

    #[test]
    fn grants_cover_listed_mailboxes_and_star() {
        assert!(grants(&["Room@Contoso.com".to_owned()], "room@contoso.com"));
        assert!(grants(&["*".to_owned()], "anyone@contoso.com"));
        assert!(!grants(
            &["room@contoso.com".to_owned()],
            "alice@contoso.com"
        ));
    }

    #[test]
    fn uids_decode_to_goid_bytes() {
        assert_eq!(goid_from_uid("0A0b"), Some(vec![0x0a, 0x0b]));
        assert_eq!(goid_from_uid("0A0"), None);
    }
}
