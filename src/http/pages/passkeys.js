// The pages' one script: passkeys (WebAuthn) on the sign-in page, its second step and the
// account page. Plain ES2020, no build step, nothing inline (the pages' CSP is script-src
// 'self'). Everything else on the pages works without it; the passkey controls are hidden
// until this script finds that the browser has passkeys (window.PublicKeyCredential).
"use strict";

(() => {
  if (typeof window.PublicKeyCredential !== "function" || !navigator.credentials) {
    return;
  }
  const PKC = window.PublicKeyCredential;

  // --- WebAuthn JSON (base64url), native where the browser has it ---------------------------

  const fromB64u = (s) => {
    const b64 = s.replace(/-/g, "+").replace(/_/g, "/");
    return Uint8Array.from(atob(b64 + "===".slice((b64.length + 3) % 4)), (c) => c.charCodeAt(0));
  };
  const toB64u = (buffer) =>
    btoa(String.fromCharCode(...new Uint8Array(buffer)))
      .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const descriptors = (list) => (list || []).map((c) => ({ ...c, id: fromB64u(c.id) }));

  const creationOptions = (o) =>
    typeof PKC.parseCreationOptionsFromJSON === "function"
      ? PKC.parseCreationOptionsFromJSON(o)
      : { ...o, challenge: fromB64u(o.challenge), user: { ...o.user, id: fromB64u(o.user.id) },
          excludeCredentials: descriptors(o.excludeCredentials) };
  const requestOptions = (o) =>
    typeof PKC.parseRequestOptionsFromJSON === "function"
      ? PKC.parseRequestOptionsFromJSON(o)
      : { ...o, challenge: fromB64u(o.challenge), allowCredentials: descriptors(o.allowCredentials) };

  const credentialJSON = (c) => {
    if (typeof c.toJSON === "function") {
      return JSON.stringify(c.toJSON());
    }
    const r = c.response;
    const response = { clientDataJSON: toB64u(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toB64u(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toB64u(r.authenticatorData);
      response.signature = toB64u(r.signature);
      if (r.userHandle) {
        response.userHandle = toB64u(r.userHandle);
      }
    }
    return JSON.stringify({
      id: c.id, rawId: toB64u(c.rawId), type: c.type, response,
      authenticatorAttachment: c.authenticatorAttachment || null,
      clientExtensionResults: c.getClientExtensionResults(),
    });
  };

  // --- The server ----------------------------------------------------------------------------

  // A problem the server answered: `detail` in words for people, `fields` (input name:
  // sentence) where the page's own routes say which input is wrong.
  class Problem extends Error {
    constructor(body) {
      super(body.detail || "Something went wrong; try again.");
      this.code = body.code;
      this.fields = body.fields || {};
      this.methods = body.methods || [];
    }
  }

  // POSTs `body` (a URLSearchParams, or an object sent as JSON) and answers the JSON reply
  // (null for 204), or throws a Problem.
  const post = async (url, body) => {
    const json = !(body instanceof URLSearchParams);
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": json ? "application/json" : "application/x-www-form-urlencoded",
                 Accept: "application/json" },
      body: json ? JSON.stringify(body) : body,
    });
    if (response.status === 204) {
      return null;
    }
    let answer = null;
    try {
      answer = await response.json();
    } catch (e) {
      answer = null;
    }
    if (!response.ok || !answer) {
      throw new Problem(answer || {});
    }
    return answer;
  };

  // What went wrong, in words.
  const words = (e) => {
    if (e instanceof Problem) {
      return e.message;
    }
    switch (e && e.name) {
      case "NotAllowedError":
      case "AbortError":
        return "The passkey was not used: it was cancelled, or it took too long. Try again.";
      case "InvalidStateError":
        return "This device already has a passkey for your account.";
      case "SecurityError":
        return "Passkeys cannot be used at this address.";
      case "TypeError":
        return "The server could not be reached. Check your connection and try again.";
      default:
        return "The passkey did not work in this browser. Try again.";
    }
  };

  // Says `text` in the alert region `region` (empty text: nothing to say).
  const say = (region, text) => {
    if (region) {
      region.textContent = text;
      region.hidden = !text;
    }
  };

  const reveal = () => {
    for (const element of document.querySelectorAll("[data-passkey]")) {
      element.hidden = false;
    }
    for (const element of document.querySelectorAll("[data-passkey-fallback]")) {
      element.hidden = true;
    }
  };

  const submit = (form) => HTMLFormElement.prototype.submit.call(form);

  // What navigator.credentials answered, or the refusal it stands for.
  const answered = (credential) => {
    if (!credential) {
      throw new DOMException("no credential", "NotAllowedError");
    }
    return credential;
  };

  // Runs `work` on each click of `button`, not twice at once (the button keeps the focus: it
  // is not disabled meanwhile), saying what went wrong in `region`.
  const onClick = (button, region, work) => {
    let busy = false;
    button.addEventListener("click", async () => {
      if (busy) {
        return;
      }
      busy = true;
      say(region, "");
      try {
        await work();
      } catch (e) {
        say(region, words(e));
        busy = false;
      }
    });
  };

  // --- Sign-in: conditional UI on load, the button for a modal request -----------------------

  const signIn = (button, form) => {
    const region = document.getElementById("passkey-error");
    const email = document.getElementById("sign-in-email");
    const send = (credential) => {
      form.elements.credential.value = credentialJSON(credential);
      submit(form);
    };
    // The passkeys offered in the email field's autofill, while the page is open.
    const autofill = new AbortController();
    const conditional = (async () => {
      if (typeof PKC.isConditionalMediationAvailable !== "function"
          || !(await PKC.isConditionalMediationAvailable())) {
        return;
      }
      const options = await post("/login/passkey/options", {});
      if (autofill.signal.aborted) {
        return;
      }
      const credential = await navigator.credentials.get({
        mediation: "conditional", publicKey: requestOptions(options.publicKey),
        signal: autofill.signal,
      });
      if (credential) {
        send(credential);
      }
    })().catch(() => {}); // The button and the password are still there.

    onClick(button, region, async () => {
      autofill.abort();
      await conditional;
      const address = email ? email.value.trim() : "";
      const options = await post("/login/passkey/options", address ? { email: address } : {});
      send(answered(await navigator.credentials.get({
        publicKey: requestOptions(options.publicKey),
      })));
    });
  };

  // The second step of a sign-in, with a passkey instead of a code.
  const secondStep = (button, form) => {
    const region = document.getElementById("passkey-error");
    onClick(button, region, async () => {
      const options = await post("/login/mfa/passkey/options",
        { mfa_token: form.elements.mfa_token.value });
      const credential = answered(await navigator.credentials.get({
        publicKey: requestOptions(options.publicKey),
      }));
      form.elements.passkey.value = credentialJSON(credential);
      submit(form);
    });
  };

  // --- The account page ----------------------------------------------------------------------

  // Marks the inputs a Problem names, says it all in the form's alert region, and moves the
  // focus there.
  const failed = (form, e) => {
    const region = form.querySelector(".passkey-problem");
    const lines = [];
    for (const input of form.querySelectorAll("input[aria-invalid]")) {
      input.removeAttribute("aria-invalid");
    }
    if (e instanceof Problem) {
      for (const [name, sentence] of Object.entries(e.fields)) {
        const input = form.elements[name];
        if (input && input.type !== "hidden") {
          input.setAttribute("aria-invalid", "true");
        }
        lines.push(sentence);
      }
    }
    if (lines.length === 0) {
      lines.push(words(e));
    }
    say(region, lines.join(" "));
  };

  // The form's own fields, as the page's routes read them.
  const fields = (form, names) => {
    const body = new URLSearchParams();
    for (const name of names) {
      const input = form.elements[name];
      if (input && input.value) {
        body.set(name, input.value);
      }
    }
    return body;
  };

  // Whether the form's post needs a passkey proof first: `data-step-up` is "always" (an account
  // without a password) or "unless-code" (the account's second factor, unless a code is typed).
  const needsProof = (form) => {
    const code = form.elements.code;
    return form.dataset.stepUp === "always"
      || (form.dataset.stepUp === "unless-code" && !(code && code.value.trim()));
  };

  // A passkey proof for this session (a step-up), for the forms that need one.
  const stepUp = async (form) => {
    const options = await post("/account/passkeys/step-up/options", fields(form, ["csrf"]));
    const credential = answered(await navigator.credentials.get({
      publicKey: requestOptions(options.publicKey),
    }));
    const body = fields(form, ["csrf"]);
    body.set("credential", credentialJSON(credential));
    await post("/account/passkeys/step-up", body);
  };

  // Runs `work` on the form's submission (not twice at once; the focus stays where it is);
  // on failure, says why.
  const intercept = (form, work) => {
    let busy = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (busy) {
        return;
      }
      busy = true;
      say(form.querySelector(".passkey-problem"), "");
      try {
        await work();
      } catch (e) {
        failed(form, e);
        busy = false;
      }
    });
  };

  // Add a passkey: the options (password, code), the authenticator, then the page's post.
  const addPasskey = (form) => {
    intercept(form, async () => {
      if (needsProof(form)) {
        await stepUp(form);
      }
      const ask = () => post("/account/passkeys/options",
        fields(form, ["csrf", "password", "code"]));
      // A proof that has grown old since the page was shown: a step-up, and once more.
      const options = await ask().catch(async (e) => {
        if (e instanceof Problem && e.code === "STEP_UP_REQUIRED" && e.methods.includes("passkey")) {
          await stepUp(form);
          return ask();
        }
        throw e;
      });
      const credential = answered(await navigator.credentials.create({
        publicKey: creationOptions(options.publicKey),
      }));
      form.elements.credential.value = credentialJSON(credential);
      // The password and the code have been used: they do not travel again.
      for (const name of ["password", "code"]) {
        if (form.elements[name]) {
          form.elements[name].value = "";
        }
      }
      submit(form);
    });
  };

  // A sensitive form whose proof may be a passkey.
  const withStepUp = (form) => {
    intercept(form, async () => {
      if (needsProof(form)) {
        await stepUp(form);
      }
      submit(form);
    });
  };

  // --- Start ---------------------------------------------------------------------------------

  reveal();
  const button = document.getElementById("passkey-sign-in");
  const form = document.getElementById("passkey-form");
  if (button && form) {
    signIn(button, form);
  }
  const mfaButton = document.getElementById("passkey-mfa");
  const mfaForm = document.getElementById("passkey-mfa-form");
  if (mfaButton && mfaForm) {
    secondStep(mfaButton, mfaForm);
  }
  const add = document.getElementById("passkey-add");
  if (add) {
    addPasskey(add);
  }
  for (const sensitive of document.querySelectorAll("form[data-step-up]")) {
    if (sensitive !== add) {
      withStepUp(sensitive);
    }
  }
})();
