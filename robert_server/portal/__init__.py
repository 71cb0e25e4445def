"""ProStopCovid: the web page where doctors and nurses get a patient's short code (issue 13).

A client of the code issuer (proto/codes.proto) like any other issuer, behind an OpenID Connect
provider (Pro Santé Connect in production, ``dev_idp/`` in development and tests), with a passkey
fallback login for when the provider is down. Run by ``robert portal``.
"""
