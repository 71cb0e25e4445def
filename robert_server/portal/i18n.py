"""The portal's words, in French (default) and English."""

from __future__ import annotations

LANGUAGES = ("fr", "en")
DEFAULT = "fr"

TEXTS: dict[str, tuple[str, str]] = {
    "title": ("ProStopCovid", "ProStopCovid"),
    "tagline": (
        "Code de déclaration pour l'application TousAntiCovid, réservé aux professionnels de santé",
        "Reporting code for the TousAntiCovid app, for health professionals",
    ),
    "skip": ("Aller au contenu", "Skip to content"),
    "lang_switch": ("English", "Français"),
    "lang_switch_code": ("en", "fr"),
    "login_psc": ("Se connecter avec Pro Santé Connect", "Log in with Pro Santé Connect"),
    "login_intro": (
        "Connectez-vous avec votre carte CPS ou e-CPS pour générer le code d'un patient.",
        "Log in with your CPS card or e-CPS to generate a patient's code.",
    ),
    "login_fallback": ("Se connecter avec une clé d'accès (secours)", "Log in with a passkey (fallback)"),
    "fallback_title": ("Connexion de secours", "Fallback login"),
    "fallback_intro": (
        "Si Pro Santé Connect est indisponible, utilisez la clé d'accès enregistrée lors d'une connexion "
        "précédente.",
        "If Pro Santé Connect is unavailable, use the passkey you registered during an earlier login.",
    ),
    "fallback_button": ("Utiliser ma clé d'accès", "Use my passkey"),
    "logged_in_as": ("Connecté(e) :", "Logged in:"),
    "fallback_marker": ("connexion de secours", "fallback login"),
    "logout": ("Se déconnecter", "Log out"),
    "generate": ("Générer un code", "Generate a code"),
    "home_title": ("Générer le code d'un patient", "Generate a patient's code"),
    "when_title": ("Quand donner un code", "When to give a code"),
    "when_confirmed": (
        "Cas confirmé dont le QR code SI-DEP est absent ou illisible, après avoir vérifié qu'il ne sera "
        "pas utilisé par quelqu'un d'autre.",
        "A confirmed case whose SI-DEP QR code is missing or broken, after checking that it will not be "
        "used by someone else.",
    ),
    "when_probable": (
        "Cas probable diagnostiqué cliniquement.",
        "A probable case diagnosed clinically.",
    ),
    "next_title": ("Ce que fait le patient", "What the patient does next"),
    "next_enter": (
        "Dans TousAntiCovid : « Me déclarer », puis saisir le code (ou scanner le QR code).",
        "In TousAntiCovid: \u201cReport myself\u201d, then enter the code (or scan the QR code).",
    ),
    "next_symptoms": (
        "Puis indiquer la date de début des symptômes (ou du test).",
        "Then give the date symptoms started (or of the test).",
    ),
    "code_title": ("Code du patient", "Patient's code"),
    "code_label": ("Code à 6 caractères, à dicter au patient", "6-character code, to read to the patient"),
    "valid_until": (
        "Valable jusqu'à {time} (60 minutes), à usage unique.",
        "Valid until {time} (60 minutes), single use.",
    ),
    "qr_label": (
        "QR code du code, à scanner avec TousAntiCovid",
        "QR code of the code, to scan with TousAntiCovid",
    ),
    "print": ("Imprimer", "Print"),
    "new_code": ("Générer un autre code", "Generate another code"),
    "back": ("Retour", "Back"),
    "passkey_title": ("Connexion de secours", "Fallback login"),
    "passkey_intro": (
        "Enregistrez une clé d'accès sur cet appareil : elle vous permettra de générer des codes si "
        "Pro Santé Connect est en panne.",
        "Register a passkey on this device: it lets you generate codes if Pro Santé Connect is down.",
    ),
    "passkey_enroll": ("Enregistrer une clé d'accès", "Register a passkey"),
    "passkey_enrolled": ("Clé d'accès enregistrée.", "Passkey registered."),
    "passkey_failed": ("La clé d'accès n'a pas pu être utilisée.", "The passkey could not be used."),
    "provider_down_title": ("Pro Santé Connect est indisponible", "Pro Santé Connect is unavailable"),
    "provider_down": (
        "Le service d'identification Pro Santé Connect ne répond pas pour le moment. Vous pouvez utiliser "
        "votre clé d'accès de secours, ou réessayer dans quelques minutes.",
        "The Pro Santé Connect identity service is not answering right now. You can use your fallback "
        "passkey, or try again in a few minutes.",
    ),
    "retry": ("Réessayer", "Try again"),
    "auto_retry": (
        "Nouvel essai automatique dans 10 secondes.",
        "Trying again automatically in 10 seconds.",
    ),
    "login_failed_title": ("Connexion impossible", "Login failed"),
    "login_failed": (
        "La connexion n'a pas abouti. Veuillez recommencer.",
        "The login did not complete. Please start again.",
    ),
    "refused_title": ("Accès réservé", "Access restricted"),
    "refused": (
        "La génération de codes est réservée aux médecins et aux infirmiers. Votre profession ne "
        "permet pas d'en générer.",
        "Generating codes is for doctors and nurses only. Your profession does not allow it.",
    ),
    "expired_title": ("Session expirée", "Session expired"),
    "expired": (
        "Votre session a expiré. Veuillez vous reconnecter.",
        "Your session has expired. Please log in again.",
    ),
    "csrf_title": ("Requête refusée", "Request refused"),
    "csrf": (
        "Ce formulaire n'est plus valide. Rechargez la page et recommencez.",
        "This form is no longer valid. Reload the page and try again.",
    ),
    "issuer_down_title": ("Service des codes injoignable", "Code service unreachable"),
    "issuer_down": (
        "Le service qui enregistre les codes ne répond pas : aucun code n'a été créé. "
        "Réessayez dans un instant.",
        "The service that stores codes is not answering: no code was created. Try again in a moment.",
    ),
    "limit_title": ("Limite atteinte", "Limit reached"),
    "limit_hour": (
        "Vous avez atteint le nombre maximal de codes par heure.",
        "You have reached the maximum number of codes per hour.",
    ),
    "limit_day": (
        "Vous avez atteint le nombre maximal de codes par jour.",
        "You have reached the maximum number of codes per day.",
    ),
    "logged_out_title": ("Déconnecté(e)", "Logged out"),
    "logged_out": ("Vous êtes déconnecté(e).", "You are logged out."),
    "not_found_title": ("Page introuvable", "Page not found"),
    "not_found": ("Cette page n'existe pas.", "This page does not exist."),
    "error_title": ("Erreur", "Error"),
    "error": ("Une erreur est survenue. Réessayez.", "Something went wrong. Please try again."),
    "home_link": ("Accueil", "Home"),
    "js_needed": (
        "La clé d'accès nécessite JavaScript et un navigateur récent.",
        "Passkeys need JavaScript and a recent browser.",
    ),
}


def translator(lang: str):  # type: ignore[no-untyped-def]
    index = LANGUAGES.index(lang) if lang in LANGUAGES else 0

    def t(key: str, **values: str) -> str:
        text = TEXTS[key][index]
        return text.format(**values) if values else text

    return t
