// Development OpenID Connect provider for the ProStopCovid portal, shaped like Pro Santé Connect:
// authorization code + PKCE, acr "eidas1", scope "scope_all" giving SubjectNameID (the professional's
// national identifier) and SubjectRefPro.exercices[].codeProfession, userinfo signed as a JWT.
// Used by the tests and by `robert up`; never in production.
//
// Settings (environment):
//   IDP_PORT            port on 127.0.0.1 (0: any free port)
//   IDP_CLIENT_ID       client id of the portal
//   IDP_CLIENT_SECRET   its secret (client_secret_basic)
//   IDP_CLIENT_JWKS     or its public JWK set (JSON): private_key_jwt
//   IDP_REDIRECT_URIS   comma-separated redirect URIs of the portal
//   IDP_POST_LOGOUT_REDIRECT_URIS  comma-separated
// Prints one line "listening <issuer>" on stdout once it accepts connections.
// Test users (password "secret"): doctor (10 = médecin), nurse (60 = infirmier), pharmacist (21).
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import http from 'node:http';
import process from 'node:process';
import Provider from 'oidc-provider';

const USERS = {
  doctor: { id: '810000000001', profession: '10', given: 'Marie', family: 'Curie' },
  nurse: { id: '810000000002', profession: '60', given: 'Florence', family: 'Nightingale' },
  pharmacist: { id: '810000000003', profession: '21', given: 'Louis', family: 'Pasteur' },
};
const PASSWORD = 'secret';

function env(name, fallback) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    if (fallback === undefined) {
      console.error(`dev idp: ${name} is required`);
      process.exit(2);
    }
    return fallback;
  }
  return value;
}

const list = (text) => text.split(',').map((s) => s.trim()).filter(Boolean);
const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;max-width:26rem;margin:2rem auto;padding:0 1rem}
label,input,button{display:block;margin:.4rem 0;font-size:1rem}input{width:100%}
.dev{background:#fff3cd;padding:.5rem}</style></head>
<body><p class="dev">Development identity provider (not Pro Santé Connect)</p>${body}</body></html>`;
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 16384) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString()));
}

function claimsOf(login) {
  const user = USERS[login];
  return {
    SubjectNameID: user.id,
    SubjectRefPro: {
      codeCivilite: '',
      exercices: [{ codeProfession: user.profession, codeCategorieProfessionnelle: 'C' }],
    },
    given_name: user.given,
    family_name: user.family,
  };
}

const port = Number(env('IDP_PORT', '0'));
const server = http.createServer();
await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

// A new signing key at each start: a restart is a key rotation for the portal.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };

const clientJwks = env('IDP_CLIENT_JWKS', '');
const clientAuth = clientJwks
  ? { token_endpoint_auth_method: 'private_key_jwt', jwks: JSON.parse(clientJwks) }
  : { token_endpoint_auth_method: 'client_secret_basic', client_secret: env('IDP_CLIENT_SECRET') };

const provider = new Provider(issuer, {
  clients: [{
    client_id: env('IDP_CLIENT_ID'),
    ...clientAuth,
    redirect_uris: list(env('IDP_REDIRECT_URIS')),
    post_logout_redirect_uris: list(env('IDP_POST_LOGOUT_REDIRECT_URIS', '')),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    userinfo_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [jwk] },
  acrValues: ['eidas1'],
  scopes: ['openid', 'scope_all'],
  claims: {
    openid: ['sub'],
    scope_all: ['SubjectNameID', 'SubjectRefPro', 'given_name', 'family_name'],
  },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    jwtUserinfo: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // Confirm the sign-out at once (a development convenience).
      logoutSource: async (ctx, form) => {
        const auto = form.replace('</form>', '<input type="hidden" name="logout" value="yes"></form>');
        ctx.body = page('Sign out', `${auto}<button type="submit" form="op.logoutForm">Sign out</button>
<script>document.getElementById('op.logoutForm').submit()</script>`);
      },
    },
  },
  findAccount: async (ctx, sub) => {
    const login = Object.keys(USERS).find((name) => USERS[name].id === sub);
    if (!login) return undefined;
    return { accountId: sub, claims: async () => ({ sub, ...claimsOf(login) }) };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { Session: 3600, Interaction: 600, Grant: 3600, AccessToken: 600, AuthorizationCode: 60, IdToken: 600 },
});
provider.on('server_error', (ctx, err) => console.error('dev idp server error', err));

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  if (prompt.name === 'consent') {
    // The portal is a first-party client: grant what it asked without a consent screen.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  if (req.method === 'POST') {
    const form = await readForm(req);
    if (USERS[form.login] && form.password === PASSWORD) {
      const result = { login: { accountId: USERS[form.login].id, acr: 'eidas1', amr: ['pwd'] } };
      await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
      return;
    }
  }
  const error = req.method === 'POST' ? '<p role="alert">Unknown user or wrong password.</p>' : '';
  res.setHeader('content-type', 'text/html; charset=utf-8');
  res.end(page('Sign in', `<h1>Sign in</h1>${error}
<form method="post" action="/interaction/${escape(uid)}">
<label for="login">Login</label><input id="login" name="login" autocomplete="username" autofocus>
<label for="password">Password</label><input id="password" name="password" type="password">
<button type="submit">Sign in</button></form>
<p>Users: doctor, nurse, pharmacist; password: secret.</p>`));
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      res.statusCode = 400;
      res.end(`interaction error: ${err.message}`);
    });
    return;
  }
  callback(req, res);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}
console.log(`listening ${issuer}`);
