/*
 * Simulated Outlook compose window (vmr-simulator).
 *
 * Owns the item being composed (subject, times, attendees, body) and hosts the add-in's task
 * pane in an iframe. The pane's fake Office.js (/office.js) sends every mailbox call here with
 * postMessage; this script applies it to the form the way Outlook does (HTML sanitising, text
 * escaping, recipient checks, Outlook error codes), waits the scenario's delay and answers.
 * Identity tokens come from the simulator's Exchange issuer (POST /outlook/identity-token).
 * Tests drive and inspect it through window.simulatedOutlook.
 */
(function () {
  "use strict";

  var PROTOCOL = "vmr-simulated-outlook/1";
  var MAX_RECIPIENTS = 500;

  // Outlook's error table (outlook-web Office.js, getErrorArgs).
  var ERRORS = {
    NumberOfRecipientsExceeded: [9012, "The total number of recipients in the field can't exceed " + MAX_RECIPIENTS + "."],
    NoValidRecipientsProvided: [9013, "No valid recipients were provided."],
    AccessRestricted: [9017, "Access to this resource is restricted."],
    GenericTokenError: [9018, "An error occurred while retrieving the token."],
    GenericSettingsError: [9019, "An error occurred while saving the settings."],
    GenericResponseError: [9020, "An error occurred while processing the response."],
    SaveError: [9021, "Connection error occurred while trying to save the item on the server."],
    APICallFailedDueToItemChange: [9030, "The selected item has been changed."],
    InvalidParameterValueError: [9031, "The value of the parameter is invalid."],
    HTTPRequestFailure: [9040, "The request has failed. Please look at the diagnostics object for the HTTP error code."],
    NetworkError: [9041, "The user is no longer connected to the network. Please check your network connection and try again."],
    InternalServerError: [9042, "The Exchange server returned an error. Please look at the diagnostics object for more information."],
    InvalidEndTime: [9010, "The end time cannot be before the start time."]
  };

  function OfficeError(name, message) {
    var entry = ERRORS[name] || [9020, ""];
    return { code: entry[0], name: ERRORS[name] ? name : "GenericResponseError", message: message || entry[1] };
  }

  var scenario = JSON.parse(document.getElementById("scenario").textContent);
  scenario.fail = scenario.fail || {};

  var calls = [];
  var paneOrigin = null;
  var paneConnected = false;
  var itemId = null;

  var state = {
    subject: scenario.subject || "",
    location: "",
    requiredAttendees: [],
    optionalAttendees: [],
    organizer: { displayName: scenario.organizerName, emailAddress: scenario.organizer },
    start: null,
    end: null
  };

  // --- times -------------------------------------------------------------------------------
  (function initTimes() {
    var start = new Date();
    start.setMinutes(0, 0, 0);
    start.setHours(start.getHours() + 1);
    state.start = start;
    state.end = new Date(start.getTime() + 30 * 60 * 1000);
  })();

  function toLocalInput(date) {
    var pad = function (n) { return String(n).padStart(2, "0"); };
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      "T" + pad(date.getHours()) + ":" + pad(date.getMinutes());
  }

  // --- HTML / text conversion (what Outlook does when coercing) -----------------------------
  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }

  function textToHtml(text) {
    return escapeHtml(text).replace(/\r\n|\r|\n/g, "<br>");
  }

  var BLOCK = /^(P|DIV|LI|TR|H[1-6]|TABLE|UL|OL|BLOCKQUOTE|PRE|SECTION|ARTICLE|HEADER|FOOTER)$/;

  function htmlToText(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var out = "";
    function walk(node) {
      if (node.nodeType === Node.TEXT_NODE) {
        out += node.nodeValue.replace(/\s+/g, " ");
        return;
      }
      if (node.nodeType !== Node.ELEMENT_NODE || /^(SCRIPT|STYLE|HEAD|TITLE)$/.test(node.tagName)) {
        return;
      }
      if (node.tagName === "BR") {
        out += "\n";
        return;
      }
      var block = BLOCK.test(node.tagName);
      if (block && out.length && !/\n$/.test(out)) {
        out += "\n";
      }
      node.childNodes.forEach(walk);
      if (block && !/\n$/.test(out)) {
        out += "\n";
      }
    }
    walk(doc.body);
    return out.replace(/[ \t]+\n/g, "\n").replace(/\n[ \t]+/g, "\n").replace(/\n{3,}/g, "\n\n").trim();
  }

  // Outlook's HTML sanitiser: no active content survives insertion into a body.
  function sanitizeToFragment(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    var remove = template.content.querySelectorAll("script, iframe, frame, frameset, object, embed, applet, base, meta, link, form, input, button, textarea, select");
    remove.forEach(function (el) { el.remove(); });
    template.content.querySelectorAll("*").forEach(function (el) {
      Array.prototype.slice.call(el.attributes).forEach(function (attr) {
        var name = attr.name.toLowerCase();
        var value = attr.value.replace(/[\s\u0000-\u001f]/g, "").toLowerCase();
        if (name.indexOf("on") === 0 || name === "srcdoc" ||
          ((name === "href" || name === "src" || name === "action" || name === "formaction" || name === "xlink:href") &&
            (value.indexOf("javascript:") === 0 || value.indexOf("vbscript:") === 0 || value.indexOf("data:text/html") === 0))) {
          el.removeAttribute(attr.name);
        }
      });
    });
    return template.content;
  }

  // --- form ----------------------------------------------------------------------------------
  var el = {
    subject: document.getElementById("subject"),
    location: document.getElementById("location"),
    start: document.getElementById("start"),
    end: document.getElementById("end"),
    required: document.getElementById("required-attendees"),
    optional: document.getElementById("optional-attendees"),
    organizer: document.getElementById("organizer"),
    bodyHtml: document.getElementById("body-html"),
    bodyText: document.getElementById("body-text"),
    frame: document.getElementById("pane-frame"),
    noItem: document.getElementById("no-item"),
    form: document.getElementById("compose")
  };

  function bodyType() {
    return scenario.body === "text" ? "text" : "html";
  }

  function rawBody() {
    return bodyType() === "html" ? el.bodyHtml.innerHTML : el.bodyText.value;
  }

  function setRawBody(value) {
    if (bodyType() === "html") {
      el.bodyHtml.replaceChildren(sanitizeToFragment(value));
    } else {
      el.bodyText.value = value;
    }
  }

  function renderRecipients(container, list) {
    if (!container) {
      return;
    }
    container.replaceChildren();
    list.forEach(function (r) {
      var chip = document.createElement("span");
      chip.className = "recipient";
      chip.setAttribute("role", "listitem");
      chip.textContent = r.displayName ? r.displayName + " <" + r.emailAddress + ">" : r.emailAddress;
      chip.title = r.emailAddress;
      chip.dataset.email = r.emailAddress;
      container.appendChild(chip);
    });
  }

  function render() {
    el.subject.value = state.subject;
    if (el.location) {
      el.location.value = state.location;
    }
    if (el.start) {
      el.start.value = toLocalInput(state.start);
      el.end.value = toLocalInput(state.end);
    }
    renderRecipients(el.required, state.requiredAttendees);
    renderRecipients(el.optional, state.optionalAttendees);
    if (el.organizer) {
      el.organizer.textContent = state.organizer.displayName + " <" + state.organizer.emailAddress + ">";
    }
  }

  function setupForm() {
    document.body.dataset.itemType = scenario.item;
    document.body.dataset.bodyType = bodyType();
    if (scenario.item === "none") {
      el.form.hidden = true;
      el.noItem.hidden = false;
    }
    if (scenario.item === "message") {
      document.querySelectorAll(".appointment-only").forEach(function (n) { n.hidden = true; });
      document.getElementById("required-label").textContent = "To";
      document.getElementById("optional-label").textContent = "Cc";
      document.getElementById("item-tab").textContent = "Message";
      document.querySelector("label[for='subject']").textContent = "Subject";
      el.form.setAttribute("aria-label", "Message");
      el.bodyHtml.dataset.placeholder = el.bodyText.placeholder = "Add a message";
      document.title = "Untitled - Message (simulated Outlook)";
    }
    el.bodyHtml.hidden = bodyType() !== "html";
    el.bodyText.hidden = bodyType() !== "text";
    el.subject.addEventListener("input", function () { state.subject = el.subject.value; });
    if (el.location) {
      el.location.addEventListener("input", function () { state.location = el.location.value; });
    }
    if (el.start) {
      el.start.addEventListener("change", function () {
        var d = new Date(el.start.value);
        if (!isNaN(d.getTime())) {
          var length = state.end.getTime() - state.start.getTime();
          state.start = d;
          state.end = new Date(d.getTime() + length);
          render();
        }
      });
      el.end.addEventListener("change", function () {
        var d = new Date(el.end.value);
        if (!isNaN(d.getTime())) {
          state.end = d;
        }
      });
    }
    render();
  }

  // --- operations ------------------------------------------------------------------------------
  function insertBody(data, coercionType, mode) {
    if (bodyType() === "html") {
      var fragment = sanitizeToFragment(coercionType === "html" ? data : textToHtml(data));
      if (mode === "set") {
        el.bodyHtml.replaceChildren(fragment);
      } else {
        el.bodyHtml.insertBefore(fragment, el.bodyHtml.firstChild);
      }
    } else {
      var text = coercionType === "html" ? htmlToText(data) : data;
      el.bodyText.value = mode === "set" ? text : text + el.bodyText.value;
    }
  }

  function readBody(coercionType) {
    if (bodyType() === "html") {
      if (coercionType === "text") {
        return htmlToText(el.bodyHtml.innerHTML);
      }
      return "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\"></head><body>" +
        el.bodyHtml.innerHTML + "</body></html>";
    }
    return coercionType === "html"
      ? "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\"></head><body><div>" + textToHtml(el.bodyText.value) + "</div></body></html>"
      : el.bodyText.value;
  }

  var EMAIL = /^[^\s@<>()\[\]\\,;:"]+@[^\s@<>()\[\]\\,;:"]+$/;

  function checkRecipients(list, existing) {
    for (var i = 0; i < list.length; i++) {
      var r = list[i];
      if (!EMAIL.test(r.emailAddress) || r.emailAddress.length > 571 || r.displayName.length > 255) {
        return OfficeError("NoValidRecipientsProvided");
      }
    }
    if (existing + list.length > MAX_RECIPIENTS) {
      return OfficeError("NumberOfRecipientsExceeded");
    }
    return null;
  }

  function details(r, response) {
    return { displayName: r.displayName || r.emailAddress, emailAddress: r.emailAddress, appointmentResponse: response, recipientType: "user" };
  }

  function recipientField(name) {
    return name === "optionalAttendees" || name === "cc" ? "optionalAttendees" : "requiredAttendees";
  }

  function recipientsHandlers(name) {
    var field = recipientField(name);
    var h = {};
    h[name + ".getAsync"] = function () {
      return state[field].map(function (r) { return details(r, "none"); });
    };
    h[name + ".addAsync"] = function (args) {
      var err = checkRecipients(args.recipients, state[field].length);
      if (err) {
        throw err;
      }
      state[field] = state[field].concat(args.recipients);
      render();
    };
    h[name + ".setAsync"] = function (args) {
      var err = checkRecipients(args.recipients, 0);
      if (err) {
        throw err;
      }
      state[field] = args.recipients.slice();
      render();
    };
    return h;
  }

  function requestIdentityToken() {
    if (scenario.token === "fail") {
      return Promise.reject(OfficeError("GenericTokenError"));
    }
    var payload = {
      aud: scenario.aud || scenario.pane,
      email: state.organizer.emailAddress,
      name: state.organizer.displayName,
      expired: scenario.token === "expired"
    };
    return fetch("/outlook/identity-token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload)
    }).then(function (response) {
      if (!response.ok) {
        throw OfficeError("GenericTokenError");
      }
      return response.json();
    }).then(function (json) {
      return json.token;
    }, function (err) {
      throw err && err.code ? err : OfficeError("GenericTokenError");
    });
  }

  var handlers = {
    "body.getTypeAsync": function () { return bodyType(); },
    "body.getAsync": function (args) { return readBody(args.coercionType); },
    "body.setAsync": function (args) { insertBody(args.data, args.coercionType, "set"); },
    "body.prependAsync": function (args) { insertBody(args.data, args.coercionType, "prepend"); },
    // A new compose form has the cursor at the start of the body.
    "body.setSelectedDataAsync": function (args) { insertBody(args.data, args.coercionType, "prepend"); },
    "subject.getAsync": function () { return state.subject; },
    "subject.setAsync": function (args) { state.subject = args.value; render(); },
    "location.getAsync": function () { return state.location; },
    "location.setAsync": function (args) { state.location = args.value; render(); },
    "start.getAsync": function () { return state.start.toISOString(); },
    "end.getAsync": function () { return state.end.toISOString(); },
    "start.setAsync": function (args) {
      var length = state.end.getTime() - state.start.getTime();
      state.start = new Date(args.value);
      state.end = new Date(state.start.getTime() + length);
      render();
    },
    "end.setAsync": function (args) {
      var end = new Date(args.value);
      if (end.getTime() < state.start.getTime()) {
        throw OfficeError("InvalidEndTime");
      }
      state.end = end;
      render();
    },
    "organizer.getAsync": function () { return details(state.organizer, "organizer"); },
    "item.saveAsync": function () {
      if (!itemId) {
        var bytes = new Uint8Array(48);
        crypto.getRandomValues(bytes);
        itemId = "AAMkA" + btoa(String.fromCharCode.apply(null, bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
      }
      return itemId;
    },
    "item.addHandlerAsync": function () { return undefined; },
    "mailbox.addHandlerAsync": function () { return undefined; },
    "getUserIdentityTokenAsync": requestIdentityToken
  };
  ["requiredAttendees", "optionalAttendees", "to", "cc"].forEach(function (name) {
    Object.assign(handlers, recipientsHandlers(name));
  });

  function hostContext() {
    return {
      itemType: scenario.item,
      platform: "PC",
      hostVersion: "16.0.18227.20162",
      ewsUrl: location.origin + "/EWS/Exchange.asmx",
      requirementSets: { Mailbox: scenario.mailbox },
      userProfile: {
        displayName: state.organizer.displayName,
        emailAddress: state.organizer.emailAddress,
        timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"
      }
    };
  }

  function reply(target, origin, id, outcome) {
    target.postMessage(Object.assign({ protocol: PROTOCOL, kind: "result", id: id }, outcome), origin);
  }

  function handleCall(message, source, origin) {
    calls.push(message.method);
    setTimeout(function () {
      var handler = handlers[message.method];
      Promise.resolve().then(function () {
        if (scenario.fail[message.method]) {
          throw OfficeError(scenario.fail[message.method]);
        }
        if (!handler) {
          throw OfficeError("InvalidParameterValueError", "Unsupported method " + message.method + ".");
        }
        return handler(message.args || {});
      }).then(function (value) {
        reply(source, origin, message.id, { status: "succeeded", value: value, error: null });
      }, function (err) {
        var error = err && typeof err.code === "number" ? err : OfficeError("GenericResponseError", String(err));
        reply(source, origin, message.id, { status: "failed", error: error });
      });
    }, Math.max(0, Number(scenario.delay) || 0));
  }

  window.addEventListener("message", function (event) {
    if (!el.frame.contentWindow || event.source !== el.frame.contentWindow) {
      return;
    }
    var data = event.data;
    if (!data || typeof data !== "object" || data.protocol !== PROTOCOL) {
      return;
    }
    if (data.kind === "hello") {
      paneOrigin = event.origin;
      paneConnected = true;
      event.source.postMessage({ protocol: PROTOCOL, kind: "hello-ack", context: hostContext() }, event.origin);
    } else if (data.kind === "call" && event.origin === paneOrigin) {
      handleCall(data, event.source, event.origin);
    }
  });

  function paneUrl() {
    var url = new URL(scenario.pane, location.href);
    // Outlook tells the pane where it runs in this query parameter.
    url.searchParams.set("_host_Info", "Outlook$Win32$16.02$en-US$$$$0");
    return url.toString();
  }

  // --- test API ------------------------------------------------------------------------------
  window.simulatedOutlook = {
    state: function () {
      return {
        itemType: scenario.item,
        subject: state.subject,
        location: state.location,
        start: state.start.toISOString(),
        end: state.end.toISOString(),
        bodyType: bodyType(),
        body: rawBody(),
        requiredAttendees: state.requiredAttendees.map(function (r) { return { displayName: r.displayName, emailAddress: r.emailAddress }; }),
        optionalAttendees: state.optionalAttendees.map(function (r) { return { displayName: r.displayName, emailAddress: r.emailAddress }; }),
        organizer: { displayName: state.organizer.displayName, emailAddress: state.organizer.emailAddress },
        itemId: itemId,
        calls: calls.slice(),
        paneConnected: paneConnected
      };
    },
    setBody: function (value) {
      setRawBody(String(value));
    },
    setSubject: function (value) {
      state.subject = String(value);
      render();
    },
    setRequiredAttendees: function (list) {
      state.requiredAttendees = (list || []).map(function (r) {
        return typeof r === "string" ? { displayName: "", emailAddress: r } : { displayName: r.displayName || "", emailAddress: r.emailAddress };
      });
      render();
    },
    setScenario: function (changes) {
      changes = changes || {};
      ["token", "delay", "mailbox", "aud"].forEach(function (key) {
        if (changes[key] !== undefined) {
          scenario[key] = changes[key];
        }
      });
      if (changes.fail !== undefined) {
        scenario.fail = changes.fail || {};
      }
      if (paneConnected && el.frame.contentWindow) {
        el.frame.contentWindow.postMessage({ protocol: PROTOCOL, kind: "context", context: hostContext() }, paneOrigin);
      }
      return JSON.parse(JSON.stringify(scenario));
    },
    clearCalls: function () {
      calls.length = 0;
    }
  };

  // --- Send (through the simulated Exchange) ---------------------------------------------------
  function send() {
    var button = document.getElementById("send");
    var sent = document.getElementById("sent");
    var failure = document.getElementById("send-error");
    button.disabled = true;
    failure.hidden = true;
    var address = function (r) { return r.emailAddress; };
    fetch("/outlook/send", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        organizer: { name: state.organizer.displayName || "", email: state.organizer.emailAddress },
        subject: state.subject,
        body: { html: bodyType() === "html", content: rawBody() },
        start: state.start ? state.start.getTime() : null,
        end: state.end ? state.end.getTime() : null,
        required: state.requiredAttendees.map(address),
        optional: state.optionalAttendees.map(address)
      })
    }).then(function (response) {
      if (!response.ok) {
        return response.text().then(function (text) { throw new Error(text || ("HTTP " + response.status)); });
      }
      return response.json();
    }).then(function (json) {
      sent.dataset.uid = json.uid;
      sent.hidden = false;
    }, function (err) {
      failure.textContent = "Not sent: " + err.message;
      failure.hidden = false;
      button.disabled = false;
    });
  }

  setupForm();
  document.getElementById("send").addEventListener("click", send);
  el.frame.src = paneUrl();
})();
