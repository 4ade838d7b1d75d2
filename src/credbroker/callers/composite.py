"""ports.CallerAuth: one entry for every way a caller can prove who it is.

With an Authorization header: a bearer that looks like a JWT (three base64url parts, not one
of our `cbk_` tokens) goes to the OIDC verifier when one is configured; anything else to the
static tokens (ports.TokenCheck). Without one: a verified client certificate mapped to a
client (mTLS). The header wins when both are present: a gateway's certificate never lends
its client to a request that names another.
"""

from __future__ import annotations

from credbroker.callers.certificates import CertificateAuth
from credbroker.callers.oidc import OidcAuth, looks_like_jwt
from credbroker.domain import CallerProof, Client
from credbroker.errors import Unauthenticated
from credbroker.ports import TokenCheck


class CallerAuthChain:
    def __init__(
        self,
        tokens: TokenCheck,
        *,
        oidc: OidcAuth | None = None,
        certificates: CertificateAuth | None = None,
    ) -> None:
        self._tokens = tokens
        self._oidc = oidc
        self._certificates = certificates

    async def authenticate(self, proof: CallerProof) -> Client:
        authorization = proof.authorization
        if authorization:
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            if (
                self._oidc is not None
                and authorization.isascii()
                and scheme.lower() == "bearer"
                and looks_like_jwt(token)
            ):
                return await self._oidc.authenticate_token(token)
            return self._tokens.authenticate(authorization)
        if proof.peer is not None and self._certificates is not None:
            client = self._certificates.client_for(proof.peer)
            if client is None:
                raise Unauthenticated("the client certificate is not mapped to a client")
            return client
        return self._tokens.authenticate(authorization)  # its "missing token" answer

    async def close(self) -> None:
        if self._oidc is not None:
            await self._oidc.close()
