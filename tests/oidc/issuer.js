// An OpenID provider for spindle-server's OIDC tests (crates/spindle-server/tests/oidc.rs):
// panva's oidc-provider, a certified implementation, with a scripted login so an HTTP client
// completes the authorization code flow without a person.
//
// Serves on plain http on loopback: the issuer is http://127.0.0.1:$ISSUER_PORT. Nothing
// needs `proxy` here because no TLS-terminating proxy sits in front; oidc-provider then
// sets its cookies without `Secure`, which an http client keeps.
//
// Settings (environment):
//   ISSUER_PORT              port to listen on (required)
//   ISSUER_KEY_FILE          PKCS#8 PEM private key that signs every token (required):
//                            EC P-256 signs ES256, RSA signs RS256; restart with another
//                            key (and id) to rotate
//   ISSUER_KEY_ID            the key's `kid` (required)
//   ISSUER_REDIRECT_URI      the UI client's redirect URI (spindle's /auth/callback)
//   ISSUER_POST_LOGOUT_URI   the UI client's post-logout redirect URI
//   ISSUER_LOGIN             the account the scripted login signs in [default: alice]
//
// Clients:
//   spindle-ui     secret ui-secret; authorization code with PKCE
//   spindle-robot  secret robot-secret; client_credentials
// API access tokens are JWTs for the resource indicator urn:spindle, audience `spindle`
// (any other resource indicator gets a token whose audience is that indicator).
// Every account and robot token carries a `groups` claim.

import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`issuer: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const port = Number(required('ISSUER_PORT'));
const issuer = `http://127.0.0.1:${port}`;
const keyId = required('ISSUER_KEY_ID');
const privateKey = createPrivateKey(readFileSync(required('ISSUER_KEY_FILE')));
const alg = privateKey.asymmetricKeyType === 'ec' ? 'ES256' : 'RS256';
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: keyId, alg, use: 'sig' };
const redirectUri = process.env.ISSUER_REDIRECT_URI ?? 'http://127.0.0.1/auth/callback';
const postLogoutUri = process.env.ISSUER_POST_LOGOUT_URI ?? 'http://127.0.0.1/';
const loginAccount = process.env.ISSUER_LOGIN ?? 'alice';

const accounts = {
  alice: { preferred_username: 'alice', email: 'alice@example.test', groups: ['sre', 'unmapped'] },
  bob: { preferred_username: 'bob', email: 'bob@example.test', groups: ['team-a-readers'] },
};
const robotGroups = ['sre'];

const API_RESOURCE = 'urn:spindle';
const API_AUDIENCE = 'spindle';

const provider = new Provider(issuer, {
  jwks: { keys: [jwk] },
  cookies: { keys: ['spindle-test-issuer-cookies'] },
  clients: [
    {
      client_id: 'spindle-ui',
      client_secret: 'ui-secret',
      redirect_uris: [redirectUri],
      post_logout_redirect_uris: [postLogoutUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      id_token_signed_response_alg: alg,
    },
    {
      client_id: 'spindle-robot',
      client_secret: 'robot-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      id_token_signed_response_alg: alg,
    },
  ],
  claims: {
    openid: ['sub'],
    // spindle asks for openid, profile and email only; the groups ride with profile.
    profile: ['preferred_username', 'groups'],
    email: ['email'],
  },
  scopes: ['openid', 'profile', 'email', 'api'],
  // spindle reads a person's name and groups from the ID token, as most providers send
  // them; oidc-provider by default keeps scope-requested claims for the userinfo endpoint.
  conformIdTokenClaims: false,
  async findAccount(_ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      // oidc-provider keeps only the claims of the granted scopes.
      async claims() {
        return { sub: id, ...account };
      },
    };
  },
  async extraTokenClaims(_ctx, token) {
    if (token.kind === 'ClientCredentials') return { groups: robotGroups };
    return undefined;
  },
  enabledJWA: {
    idTokenSigningAlgValues: ['ES256', 'RS256'],
  },
  pkce: { required: () => true },
  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, _client, oneOf) => oneOf ?? API_RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => ({
        scope: 'api',
        audience: resource === API_RESOURCE ? API_AUDIENCE : resource,
        accessTokenTTL: 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg } },
      }),
    },
  },
});

// The scripted login: signs in `loginAccount` and grants whatever the client asked for.
async function autoInteraction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId: loginAccount } }, {
      mergeWithLastSubmission: false,
    });
    return;
  }
  if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  res.statusCode = 501;
  res.end(`no scripted answer to the ${prompt.name} prompt`);
}

const handle = provider.callback();
const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url.startsWith('/interaction/')) {
    autoInteraction(req, res).catch((e) => {
      console.error('issuer: interaction failed', e);
      res.statusCode = 500;
      res.end(String(e));
    });
    return;
  }
  handle(req, res);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`issuer ready ${issuer} kid=${keyId} alg=${alg}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
