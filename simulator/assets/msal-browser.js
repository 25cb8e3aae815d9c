/*
 * Simulated @azure/msal-browser for Nested App Authentication (vmr-simulator).
 *
 * The task pane loads this file instead of Microsoft's msal-browser when it runs inside the
 * simulated Outlook. It defines the `msal` global with the part of MSAL.js an NAA pane uses:
 *
 *   msal.createNestablePublicClientApplication({ auth: { clientId, authority? } })
 *     -> Promise<app>
 *   app.initialize()                                   -> Promise<void>
 *   app.acquireTokenSilent({ scopes, account? })        -> Promise<AuthenticationResult>
 *   app.acquireTokenPopup({ scopes })                   -> Promise<AuthenticationResult>
 *   app.getActiveAccount() / app.setActiveAccount(account) / app.getAllAccounts()
 *
 * AuthenticationResult: { accessToken, account: { username, name, tenantId, localAccountId,
 * homeAccountId, environment }, scopes, expiresOn (Date), tenantId, uniqueId, tokenType,
 * fromCache, correlationId, authority }. Failures reject with MSAL-style errors (instances of
 * msal.AuthError, with `errorCode`, `errorMessage`, `subError`, `correlationId`).
 *
 * Tokens come from the simulated Entra ID: POST /entra/naa-token on the origin this script was
 * loaded from. Query parameters of this script's URL choose the scenario:
 *   naa=ok           (default) tokens are granted;
 *   naa=fail         acquireTokenSilent and acquireTokenPopup reject with `user_cancelled`
 *                    (the user closed the consent popup);
 *   naa=interaction  acquireTokenSilent rejects with `interaction_required` until an
 *                    acquireTokenPopup has succeeded on that app;
 *   user=<address>   the signed-in user (default: Office.context.mailbox.userProfile's address
 *                    when Office.js is ready, else the simulator's default user).
 */
(function () {
  "use strict";

  var TOKEN_PATH = "/entra/naa-token";
  var DEFAULT_AUTHORITY = "https://login.microsoftonline.com/common";
  var OIDC_SCOPES = ["openid", "profile", "offline_access", "email"];

  // --- where this script came from -------------------------------------------------------
  function ownScriptUrl() {
    var script = document.currentScript;
    if (script && script.src) {
      return script.src;
    }
    var scripts = document.getElementsByTagName("script");
    for (var i = scripts.length - 1; i >= 0; i--) {
      if (/\/msal-browser\.js(\?|#|$)/.test(scripts[i].src || "")) {
        return scripts[i].src;
      }
    }
    return window.location.href;
  }

  var scriptUrl = new URL(ownScriptUrl(), window.location.href);
  var simulatorOrigin = scriptUrl.origin;
  var mode = (scriptUrl.searchParams.get("naa") || "ok").toLowerCase();
  var scenarioUser = scriptUrl.searchParams.get("user");

  // --- errors (msal-common's AuthError family) ------------------------------------------
  function newCorrelationId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    return "xxxxxxxx-xxxx-4xxx-8xxx-xxxxxxxxxxxx".replace(/x/g, function () {
      return Math.floor(Math.random() * 16).toString(16);
    });
  }

  function AuthError(errorCode, errorMessage, subError) {
    var message = errorCode ? errorCode + ": " + (errorMessage || "") : (errorMessage || "");
    var err = Error.call(this, message);
    this.message = message;
    this.stack = err.stack;
    this.name = "AuthError";
    this.errorCode = errorCode || "";
    this.errorMessage = errorMessage || "";
    this.subError = subError || "";
    this.correlationId = "";
  }
  AuthError.prototype = Object.create(Error.prototype);
  AuthError.prototype.constructor = AuthError;
  AuthError.prototype.setCorrelationId = function (id) { this.correlationId = id; };

  function subclass(name) {
    function Sub(errorCode, errorMessage, subError) {
      AuthError.call(this, errorCode, errorMessage, subError);
      this.name = name;
    }
    Sub.prototype = Object.create(AuthError.prototype);
    Sub.prototype.constructor = Sub;
    return Sub;
  }
  var BrowserAuthError = subclass("BrowserAuthError");
  var ClientConfigurationError = subclass("ClientConfigurationError");
  var InteractionRequiredAuthError = subclass("InteractionRequiredAuthError");
  var ServerError = subclass("ServerError");

  function fail(ErrorType, code, message, correlationId, subError) {
    var err = new ErrorType(code, message, subError);
    err.setCorrelationId(correlationId || newCorrelationId());
    return Promise.reject(err);
  }

  // --- requests --------------------------------------------------------------------------
  function checkRequest(request) {
    if (!request || typeof request !== "object" || Array.isArray(request)) {
      return "The token request must be an object with a `scopes` array.";
    }
    if (!Array.isArray(request.scopes) || request.scopes.length === 0) {
      return "Scopes are required: the `scopes` array of the token request is empty or missing.";
    }
    for (var i = 0; i < request.scopes.length; i++) {
      if (typeof request.scopes[i] !== "string" || request.scopes[i].trim() === "") {
        return "Scopes must be non-empty strings; scope " + i + " is " + JSON.stringify(request.scopes[i]) + ".";
      }
    }
    return null;
  }

  function officeUser() {
    try {
      var profile = window.Office && window.Office.context && window.Office.context.mailbox &&
        window.Office.context.mailbox.userProfile;
      return profile && typeof profile.emailAddress === "string" && profile.emailAddress ? profile.emailAddress : null;
    } catch (e) {
      return null;
    }
  }

  function requestedUser(request) {
    if (scenarioUser) {
      return scenarioUser;
    }
    if (request.account && typeof request.account.username === "string" && request.account.username) {
      return request.account.username;
    }
    return officeUser();
  }

  function scopeKey(scopes) {
    return scopes.map(function (s) { return s.trim().toLowerCase(); })
      .filter(function (s) { return OIDC_SCOPES.indexOf(s) < 0; })
      .sort().join(" ");
  }

  function fetchToken(clientId, authority, request, correlationId) {
    var body = { client_id: clientId, scopes: request.scopes.slice() };
    var user = requestedUser(request);
    if (user) {
      body.user = user;
    }
    return fetch(simulatorOrigin + TOKEN_PATH, {
      method: "POST",
      mode: "cors",
      credentials: "omit",
      cache: "no-store",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (json) {
        return { ok: response.ok, status: response.status, json: json };
      }, function () {
        return { ok: false, status: response.status, json: null };
      });
    }, function (e) {
      var err = new BrowserAuthError("post_request_failed",
        "Network request failed: " + (e && e.message ? e.message : String(e)) + ". Token endpoint: " + simulatorOrigin + TOKEN_PATH);
      err.setCorrelationId(correlationId);
      throw err;
    }).then(function (reply) {
      if (!reply.ok || !reply.json || typeof reply.json.access_token !== "string") {
        var json = reply.json || {};
        var err = new ServerError(json.error || "server_error",
          json.error_description || ("The token endpoint answered HTTP " + reply.status + "."),
          json.suberror || "");
        err.setCorrelationId(correlationId);
        throw err;
      }
      var t = reply.json;
      var account = {
        homeAccountId: t.oid + "." + t.tenant_id,
        environment: "login.microsoftonline.com",
        tenantId: t.tenant_id,
        username: t.username,
        localAccountId: t.oid,
        name: t.name
      };
      return {
        authority: authority,
        uniqueId: t.oid,
        tenantId: t.tenant_id,
        scopes: typeof t.scope === "string" && t.scope ? t.scope.split(" ") : request.scopes.slice(),
        account: account,
        idToken: "",
        idTokenClaims: {},
        accessToken: t.access_token,
        fromCache: false,
        expiresOn: new Date(t.expires_on * 1000),
        tokenType: t.token_type || "Bearer",
        correlationId: correlationId
      };
    });
  }

  function copyResult(result, fromCache, correlationId) {
    var copy = {};
    Object.keys(result).forEach(function (k) { copy[k] = result[k]; });
    copy.account = {};
    Object.keys(result.account).forEach(function (k) { copy.account[k] = result.account[k]; });
    copy.scopes = result.scopes.slice();
    copy.expiresOn = new Date(result.expiresOn.getTime());
    copy.fromCache = fromCache;
    copy.correlationId = correlationId;
    return copy;
  }

  // --- the nestable public client application --------------------------------------------
  function NestablePublicClientApplication(configuration) {
    var clientId = configuration.auth.clientId;
    var authority = configuration.auth.authority || DEFAULT_AUTHORITY;
    var cache = {}; // scopeKey|user -> AuthenticationResult
    var activeAccount = null;
    var accounts = [];
    var interacted = false;
    var app = this;

    function remember(result, request) {
      cache[scopeKey(request.scopes) + "|" + (requestedUser(request) || "").toLowerCase()] = result;
      if (!accounts.some(function (a) { return a.homeAccountId === result.account.homeAccountId; })) {
        accounts.push(result.account);
      }
      if (!activeAccount) {
        activeAccount = result.account;
      }
      return result;
    }

    function acquire(request, interactive) {
      var correlationId = (request && typeof request.correlationId === "string" && request.correlationId) || newCorrelationId();
      // Everything settles asynchronously, like the real library.
      return Promise.resolve().then(function () {
        var problem = checkRequest(request);
        if (problem) {
          return fail(ClientConfigurationError, "invalid_request", problem, correlationId);
        }
        if (mode === "fail") {
          return fail(BrowserAuthError, "user_cancelled", "User cancelled the flow.", correlationId);
        }
        if (!interactive) {
          if (mode === "interaction" && !interacted) {
            return fail(InteractionRequiredAuthError, "interaction_required",
              "AADSTS65001: The user or administrator has not consented to use the application with ID '" + clientId + "'. Send an interactive authorization request for this user and resource.",
              correlationId, "consent_required");
          }
          var cached = cache[scopeKey(request.scopes) + "|" + (requestedUser(request) || "").toLowerCase()];
          if (cached && cached.expiresOn.getTime() - Date.now() > 5 * 60 * 1000) {
            return copyResult(cached, true, correlationId);
          }
        }
        return fetchToken(clientId, authority, request, correlationId).then(function (result) {
          if (interactive) {
            interacted = true;
          }
          remember(result, request);
          return copyResult(result, false, correlationId);
        });
      });
    }

    app.initialize = function () { return Promise.resolve(); };
    app.acquireTokenSilent = function (request) { return acquire(request, false); };
    app.acquireTokenPopup = function (request) { return acquire(request, true); };
    app.ssoSilent = function (request) { return acquire(request, false); };
    app.loginPopup = function (request) {
      return acquire(request || { scopes: ["openid", "profile"] }, true);
    };
    app.getActiveAccount = function () { return activeAccount; };
    app.setActiveAccount = function (account) { activeAccount = account || null; };
    app.getAllAccounts = function () { return accounts.slice(); };
    app.getAccountByUsername = function (username) {
      return accounts.filter(function (a) {
        return String(a.username).toLowerCase() === String(username).toLowerCase();
      })[0] || null;
    };
    app.getConfiguration = function () {
      return { auth: { clientId: clientId, authority: authority } };
    };
  }

  function createNestablePublicClientApplication(configuration) {
    return Promise.resolve().then(function () {
      var auth = configuration && typeof configuration === "object" ? configuration.auth : null;
      if (!auth || typeof auth !== "object") {
        return fail(ClientConfigurationError, "invalid_request", "The configuration must have an `auth` object with a `clientId`.");
      }
      if (typeof auth.clientId !== "string" || auth.clientId.trim() === "") {
        return fail(ClientConfigurationError, "invalid_request", "`auth.clientId` is required: the configuration has no client id.");
      }
      if (auth.authority !== undefined && auth.authority !== null && typeof auth.authority !== "string") {
        return fail(ClientConfigurationError, "invalid_request", "`auth.authority` must be a URL string.");
      }
      return new NestablePublicClientApplication(configuration);
    });
  }

  var msal = window.msal = window.msal || {};
  msal.createNestablePublicClientApplication = createNestablePublicClientApplication;
  msal.AuthError = AuthError;
  msal.BrowserAuthError = BrowserAuthError;
  msal.ClientConfigurationError = ClientConfigurationError;
  msal.InteractionRequiredAuthError = InteractionRequiredAuthError;
  msal.ServerError = ServerError;
  msal.simulated = { origin: simulatorOrigin, tokenEndpoint: simulatorOrigin + TOKEN_PATH, mode: mode };
})();
