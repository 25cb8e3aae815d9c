/*
 * Simulated Office.js (vmr-simulator).
 *
 * The task pane loads this file instead of Microsoft's office.js when it runs inside the
 * simulated Outlook compose window (/outlook/compose.html). It defines the `Office` global with
 * the Outlook surface the pane uses, with the signatures of @types/office-js: optional options
 * and callbacks, asynchronous callbacks, AsyncResult objects, and Outlook's own error codes.
 * The pane and the compose window live on different origins, so every mailbox call is a
 * postMessage round-trip to the parent window, which owns the appointment state.
 *
 * Like the real library it also nulls history.pushState/replaceState and makes alert/confirm/
 * prompt throw, so a pane that relies on them fails here as it would in Outlook.
 */
(function () {
  "use strict";

  var PROTOCOL = "vmr-simulated-outlook/1";
  var HANDSHAKE_TIMEOUT_MS = 1500;

  var parentOrigin = null;
  var hostContext = null; // context sent by the compose window in the handshake
  var pending = {};
  var nextId = 1;
  var readyInfo = null;
  var readyWaiters = [];

  // --- Office.js side effects the pane must survive --------------------------------------
  try {
    window.history.pushState = null;
    window.history.replaceState = null;
  } catch (e) { /* read-only in some browsers: ignore */ }
  ["alert", "confirm", "prompt"].forEach(function (name) {
    window[name] = function () {
      throw new Error("Function " + name + " is not supported in Office add-ins.");
    };
  });

  // --- errors ----------------------------------------------------------------------------
  function argumentError(kind, parameter, detail) {
    var err = new Error("Sys." + kind + ": " + detail + "\nParameter name: " + parameter);
    err.name = "Sys." + kind;
    return err;
  }

  function requireString(value, parameter) {
    if (typeof value !== "string") {
      throw argumentError("ArgumentTypeException", parameter,
        "Object of type '" + (value === null ? "null" : typeof value) + "' cannot be converted to type 'String'.");
    }
  }

  function requireCoercion(value, parameter) {
    if (value !== "html" && value !== "text") {
      throw argumentError("ArgumentException", parameter, "The value of the '" + parameter + "' parameter is invalid.");
    }
  }

  // (options?, callback?) in any of the forms Office.js accepts.
  function optionsAndCallback(a, b) {
    if (typeof a === "function") {
      if (b !== undefined) {
        throw argumentError("ParameterCountException", "callback", "Parameter count mismatch.");
      }
      return { options: {}, callback: a };
    }
    if (a === undefined || a === null) {
      a = {};
    } else if (typeof a !== "object" || Array.isArray(a)) {
      throw argumentError("ArgumentTypeException", "options",
        "Object of type '" + typeof a + "' cannot be converted to type 'Object'.");
    }
    if (b !== undefined && b !== null && typeof b !== "function") {
      throw argumentError("ArgumentTypeException", "callback",
        "Object of type '" + typeof b + "' cannot be converted to type 'Function'.");
    }
    return { options: a, callback: b || undefined };
  }

  // --- transport -------------------------------------------------------------------------
  function invoke(method, args, callback, asyncContext) {
    var id = nextId++;
    pending[id] = function (reply) {
      if (typeof callback !== "function") {
        return;
      }
      var failed = reply.status === "failed";
      var result = {
        status: failed ? Office.AsyncResultStatus.Failed : Office.AsyncResultStatus.Succeeded,
        value: failed ? undefined : reviveValue(method, reply.value),
        error: failed ? { code: reply.error.code, name: reply.error.name, message: reply.error.message } : null,
        asyncContext: asyncContext,
        diagnostics: failed ? reply.diagnostics : undefined
      };
      callback(result);
    };
    window.parent.postMessage({ protocol: PROTOCOL, kind: "call", id: id, method: method, args: args }, parentOrigin);
  }

  function reviveValue(method, value) {
    if ((method === "start.getAsync" || method === "end.getAsync") && typeof value === "string") {
      return new Date(value);
    }
    return value;
  }

  function onMessage(event) {
    if (event.source !== window.parent) {
      return;
    }
    var data = event.data;
    if (!data || typeof data !== "object" || data.protocol !== PROTOCOL) {
      return;
    }
    if (data.kind === "hello-ack" && readyInfo === null) {
      parentOrigin = event.origin;
      hostContext = data.context;
      installMailbox();
      becomeReady({ host: Office.HostType.Outlook, platform: hostContext.platform });
      return;
    }
    if (event.origin !== parentOrigin) {
      return;
    }
    if (data.kind === "result" && pending[data.id]) {
      var handler = pending[data.id];
      delete pending[data.id];
      handler(data);
    } else if (data.kind === "context") {
      hostContext = data.context;
    }
  }

  // --- requirement sets ------------------------------------------------------------------
  function versionAtLeast(have, want) {
    var a = String(have).split(".").map(Number);
    var b = String(want).split(".").map(Number);
    for (var i = 0; i < Math.max(a.length, b.length); i++) {
      var x = a[i] || 0;
      var y = b[i] || 0;
      if (x !== y) {
        return x > y;
      }
    }
    return true;
  }

  function isSetSupported(name, minVersion) {
    if (typeof name !== "string") {
      throw argumentError("ArgumentTypeException", "name", "Object of type '" + typeof name + "' cannot be converted to type 'String'.");
    }
    if (!hostContext) {
      return false;
    }
    var sets = hostContext.requirementSets || {};
    var key = Object.keys(sets).filter(function (k) { return k.toLowerCase() === name.toLowerCase(); })[0];
    if (key === undefined) {
      return false;
    }
    return minVersion === undefined || minVersion === null || versionAtLeast(sets[key], minVersion);
  }

  function mailboxAtLeast(version) {
    return isSetSupported("Mailbox", version);
  }

  // --- the mailbox object model ----------------------------------------------------------
  function asyncMethod(method, required, build) {
    // The method takes `required` leading arguments, then (options?, callback?) in Office.js
    // form; build(required..., options) checks them and returns the payload for the host.
    return function () {
      var fixed = Array.prototype.slice.call(arguments, 0, required);
      var rest = Array.prototype.slice.call(arguments, required);
      while (fixed.length < required) {
        fixed.push(undefined);
      }
      var oc = optionsAndCallback(rest[0], rest[1]);
      var payload = build.apply(null, fixed.concat([oc.options]));
      invoke(method, payload, oc.callback, oc.options.asyncContext);
    };
  }

  function coercionOption(options) {
    if (options.coercionType === undefined || options.coercionType === null) {
      return "text";
    }
    requireCoercion(options.coercionType, "coercionType");
    return options.coercionType;
  }

  function bodyData(data) {
    requireString(data, "data");
    if (data.length > 1000000) {
      throw argumentError("ArgumentOutOfRangeException", "data", "Specified argument was out of the range of valid values.");
    }
  }

  function recipientList(recipients) {
    if (!Array.isArray(recipients)) {
      throw argumentError("ArgumentTypeException", "recipients", "Object of type '" + typeof recipients + "' cannot be converted to type 'Array'.");
    }
    return recipients.map(function (r) {
      if (typeof r === "string") {
        return { displayName: "", emailAddress: r };
      }
      if (r && typeof r === "object" && typeof r.emailAddress === "string") {
        return { displayName: typeof r.displayName === "string" ? r.displayName : "", emailAddress: r.emailAddress };
      }
      throw argumentError("ArgumentException", "recipients", "The given parameters do not match the expected format.");
    });
  }

  function recipientsApi(field) {
    return {
      getAsync: asyncMethod(field + ".getAsync", 0, function () { return {}; }),
      addAsync: asyncMethod(field + ".addAsync", 1, function (recipients) { return { recipients: recipientList(recipients) }; }),
      setAsync: asyncMethod(field + ".setAsync", 1, function (recipients) { return { recipients: recipientList(recipients) }; })
    };
  }

  function timeApi(field) {
    return {
      getAsync: asyncMethod(field + ".getAsync", 0, function () { return {}; }),
      setAsync: asyncMethod(field + ".setAsync", 1, function (dateTime) {
        if (!(dateTime instanceof Date) || isNaN(dateTime.getTime())) {
          throw argumentError("ArgumentTypeException", "dateTime", "Object cannot be converted to type 'Date'.");
        }
        return { value: dateTime.toISOString() };
      })
    };
  }

  function buildItem() {
    var kind = hostContext.itemType;
    if (kind !== "appointment" && kind !== "message") {
      return null;
    }
    var body = {
      getTypeAsync: asyncMethod("body.getTypeAsync", 0, function () { return {}; }),
      prependAsync: asyncMethod("body.prependAsync", 1, function (data, options) {
        bodyData(data);
        return { data: data, coercionType: coercionOption(options) };
      }),
      setSelectedDataAsync: asyncMethod("body.setSelectedDataAsync", 1, function (data, options) {
        bodyData(data);
        return { data: data, coercionType: coercionOption(options) };
      })
    };
    if (mailboxAtLeast("1.3")) {
      body.getAsync = asyncMethod("body.getAsync", 1, function (coercionType) {
        requireCoercion(coercionType, "coercionType");
        return { coercionType: coercionType };
      });
      body.setAsync = asyncMethod("body.setAsync", 1, function (data, options) {
        bodyData(data);
        return { data: data, coercionType: coercionOption(options) };
      });
    }
    var item = {
      itemType: kind,
      body: body,
      subject: {
        getAsync: asyncMethod("subject.getAsync", 0, function () { return {}; }),
        setAsync: asyncMethod("subject.setAsync", 1, function (subject) {
          requireString(subject, "subject");
          if (subject.length > 255) {
            throw argumentError("ArgumentOutOfRangeException", "subject", "Specified argument was out of the range of valid values.");
          }
          return { value: subject };
        })
      }
    };
    if (mailboxAtLeast("1.3")) {
      item.saveAsync = asyncMethod("item.saveAsync", 0, function () { return {}; });
    }
    if (mailboxAtLeast("1.7")) {
      item.addHandlerAsync = asyncMethod("item.addHandlerAsync", 2, function (eventType, handler) {
        requireString(eventType, "eventType");
        if (typeof handler !== "function") {
          throw argumentError("ArgumentTypeException", "handler", "Object of type '" + typeof handler + "' cannot be converted to type 'Function'.");
        }
        return { eventType: eventType };
      });
    }
    if (kind === "appointment") {
      item.requiredAttendees = recipientsApi("requiredAttendees");
      item.optionalAttendees = recipientsApi("optionalAttendees");
      item.start = timeApi("start");
      item.end = timeApi("end");
      item.location = {
        getAsync: asyncMethod("location.getAsync", 0, function () { return {}; }),
        setAsync: asyncMethod("location.setAsync", 1, function (location) {
          requireString(location, "location");
          return { value: location };
        })
      };
      if (mailboxAtLeast("1.7")) {
        item.organizer = { getAsync: asyncMethod("organizer.getAsync", 0, function () { return {}; }) };
      }
    } else {
      item.to = recipientsApi("to");
      item.cc = recipientsApi("cc");
    }
    return item;
  }

  function installMailbox() {
    var profile = hostContext.userProfile;
    Office.context.displayLanguage = "en-US";
    Office.context.contentLanguage = "en-US";
    Office.context.platform = hostContext.platform;
    Office.context.diagnostics = { host: "Outlook", platform: hostContext.platform, version: hostContext.hostVersion };
    Office.context.mailbox = {
      item: buildItem(),
      userProfile: {
        displayName: profile.displayName,
        emailAddress: profile.emailAddress,
        timeZone: profile.timeZone,
        accountType: "enterprise"
      },
      diagnostics: { hostName: "Outlook", hostVersion: hostContext.hostVersion, OWAView: undefined },
      ewsUrl: hostContext.ewsUrl,
      restUrl: undefined,
      getUserIdentityTokenAsync: function (callback, userContext) {
        if (typeof callback !== "function") {
          throw argumentError("ArgumentTypeException", "callback", "Object of type '" + typeof callback + "' cannot be converted to type 'Function'.");
        }
        invoke("getUserIdentityTokenAsync", {}, callback, userContext);
      },
      addHandlerAsync: asyncMethod("mailbox.addHandlerAsync", 2, function (eventType, handler) {
        requireString(eventType, "eventType");
        if (typeof handler !== "function") {
          throw argumentError("ArgumentTypeException", "handler", "Object of type '" + typeof handler + "' cannot be converted to type 'Function'.");
        }
        return { eventType: eventType };
      })
    };
  }

  // --- Office global ---------------------------------------------------------------------
  var Office = window.Office = window.Office || {};
  Office.CoercionType = { Text: "text", Html: "html", Matrix: "matrix", Table: "table", Image: "image", Ooxml: "ooxml", SlideRange: "slideRange", XmlSvg: "xmlSvg" };
  Office.AsyncResultStatus = { Succeeded: "succeeded", Failed: "failed" };
  Office.HostType = { Word: "Word", Excel: "Excel", PowerPoint: "PowerPoint", Outlook: "Outlook", OneNote: "OneNote", Project: "Project", Access: "Access" };
  Office.PlatformType = { PC: "PC", OfficeOnline: "OfficeOnline", Mac: "Mac", iOS: "iOS", Android: "Android", Universal: "Universal" };
  Office.EventType = {
    ItemChanged: "olkItemSelectedChanged",
    AppointmentTimeChanged: "AppointmentTimeChanged",
    RecipientsChanged: "RecipientsChanged",
    RecurrenceChanged: "RecurrenceChanged"
  };
  Office.MailboxEnums = {
    ItemType: { Message: "message", Appointment: "appointment" },
    BodyType: { Html: "html", Text: "text" },
    ResponseType: { None: "none", Organizer: "organizer", Tentative: "tentative", Accepted: "accepted", Declined: "declined" },
    RecipientType: { Other: "other", DistributionList: "distributionList", User: "user", ExternalUser: "externalUser" },
    EntityType: {},
    ItemNotificationMessageType: { ProgressIndicator: "progressIndicator", InformationalMessage: "informationalMessage", ErrorMessage: "errorMessage", InsightMessage: "insightMessage" }
  };
  Office.context = Office.context || {};
  Office.context.requirements = { isSetSupported: isSetSupported };

  function becomeReady(info) {
    if (readyInfo) {
      return;
    }
    readyInfo = info;
    if (typeof Office.initialize === "function") {
      try {
        Office.initialize("");
      } catch (e) {
        setTimeout(function () { throw e; });
      }
    }
    var waiters = readyWaiters;
    readyWaiters = [];
    waiters.forEach(function (w) { w(); });
  }

  Office.onReady = function (callback) {
    if (callback !== undefined && callback !== null && typeof callback !== "function") {
      throw argumentError("ArgumentTypeException", "callback", "Object of type '" + typeof callback + "' cannot be converted to type 'Function'.");
    }
    return new Promise(function (resolve) {
      function done() {
        var info = { host: readyInfo.host, platform: readyInfo.platform };
        if (callback) {
          callback(info);
        }
        resolve(info);
      }
      if (readyInfo) {
        setTimeout(done, 0);
      } else {
        readyWaiters.push(done);
      }
    });
  };

  // --- handshake ---------------------------------------------------------------------------
  window.addEventListener("message", onMessage);
  if (window.parent === window) {
    becomeReady({ host: null, platform: null });
  } else {
    try {
      window.parent.postMessage({ protocol: PROTOCOL, kind: "hello" }, "*");
      setTimeout(function () {
        if (!readyInfo) {
          becomeReady({ host: null, platform: null });
        }
      }, HANDSHAKE_TIMEOUT_MS);
    } catch (e) {
      becomeReady({ host: null, platform: null });
    }
  }
})();
