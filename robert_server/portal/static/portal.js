// ProStopCovid portal: print button and passkeys (WebAuthn). No inline script anywhere (CSP).
'use strict';

function csrf() {
  return document.querySelector('meta[name="csrf-token"]').content;
}

async function post(path, body) {
  const r = await fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf() },
    body: JSON.stringify(body || {}),
  });
  if (!r.ok) throw new Error('HTTP ' + r.status);
  return r.json();
}

function say(button, text) {
  const status = document.getElementById('passkey-status');
  status.textContent = text;
  button.disabled = false;
}

async function enroll(button) {
  button.disabled = true;
  try {
    const options = await post('/passkey/register/options');
    const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options);
    const credential = await navigator.credentials.create({ publicKey });
    await post('/passkey/register/verify', credential.toJSON());
    say(button, button.dataset.ok);
  } catch (e) {
    say(button, button.dataset.fail);
  }
}

async function login(button) {
  button.disabled = true;
  try {
    const options = await post('/passkey/login/options');
    const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
    const credential = await navigator.credentials.get({ publicKey });
    const result = await post('/passkey/login/verify', credential.toJSON());
    window.location.assign(result.next);
  } catch (e) {
    say(button, button.dataset.fail);
  }
}

// The code issuer was unreachable: try again by itself a few times (the button stays for the user).
const AUTO_RETRIES = 3;
function autoRetry(button) {
  const done = Number(sessionStorage.getItem('portal-retries') || '0');
  if (done >= AUTO_RETRIES) return;
  sessionStorage.setItem('portal-retries', String(done + 1));
  document.getElementById('auto-retry').textContent = button.dataset.autoText;
  setTimeout(() => button.form.requestSubmit(), Number(button.dataset.autoSeconds) * 1000);
}

document.addEventListener('DOMContentLoaded', () => {
  if (document.getElementById('code')) sessionStorage.removeItem('portal-retries');
  const retry = document.getElementById('retry');
  if (retry && retry.dataset.autoSeconds) autoRetry(retry);
  const print = document.querySelector('[data-print]');
  if (print) print.addEventListener('click', () => window.print());
  const enrollButton = document.getElementById('passkey-enroll');
  if (enrollButton) enrollButton.addEventListener('click', () => enroll(enrollButton));
  const loginButton = document.getElementById('passkey-login');
  if (loginButton) loginButton.addEventListener('click', () => login(loginButton));
});
