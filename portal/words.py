"""What the dashboard says, in Bahasa Indonesia (default) and English: outcomes and reasons
in plain sentences with what to do next, rupiah as `Rp1.000.000`, times in WIB.

Pure: no I/O. Every outcome and reason of interfaces.md ("Outcomes") has its sentence;
tests/portal/test_words.py holds that to the enums.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from rules.money import rupiah  # noqa: F401  (the dashboard's amounts)

WIB = timezone(timedelta(hours=7), "WIB")
LANGS = ("id", "en")

_MONTHS = {
    "id": [
        "Januari", "Februari", "Maret", "April", "Mei", "Juni",
        "Juli", "Agustus", "September", "Oktober", "November", "Desember",
    ],
    "en": [
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ],
}  # fmt: skip


def lang_of(value: str | None) -> str:
    return value if value in LANGS else "id"


def to_wib(utc_naive: datetime) -> datetime:
    """A stored (naive UTC) time as an aware WIB time, to the second."""
    return utc_naive.replace(tzinfo=UTC).astimezone(WIB).replace(microsecond=0)


def wib_text(utc_naive: datetime, lang: str) -> str:
    """`21 April 2020, 23.10 WIB` (id) / `21 April 2020, 23:10 WIB` (en)."""
    t = to_wib(utc_naive)
    month = _MONTHS[lang][t.month - 1]
    clock = f"{t.hour:02d}.{t.minute:02d}" if lang == "id" else f"{t.hour:02d}:{t.minute:02d}"
    return f"{t.day} {month} {t.year}, {clock} WIB"


# Outcome headline: what happened, in a few words.
OUTCOME = {
    "REJECTED": {"id": "Tidak lolos", "en": "Not accepted"},
    "PENDING": {"id": "Sedang diproses", "en": "Still being processed"},
    "ELIGIBLE": {"id": "Lolos verifikasi, menunggu undian", "en": "Verified, waiting for the draw"},
    "WAITLISTED": {"id": "Dalam daftar tunggu", "en": "On the waiting list"},
    "SELECTED": {"id": "Terpilih", "en": "Selected"},
    "CONFIRMED": {"id": "Terpilih, saldo segera dikirim", "en": "Selected, balance on its way"},
    "CREDITED": {"id": "Saldo sudah masuk", "en": "Balance credited"},
    "NOT_SELECTED": {"id": "Tidak terpilih", "en": "Not selected"},
}

# What happened and what to do next, per reason (or per outcome where it has none).
# Each entry: (what happened, what to do next).
EXPLAIN: dict[str, dict[str, tuple[str, str]]] = {
    # Outcomes without a reason.
    "ELIGIBLE": {
        "id": (
            "Data Anda lolos semua pemeriksaan dan ikut dalam undian gelombang ini.",
            "Tunggu hasil undian di dasbor ini.",
        ),
        "en": (
            "Your registration passed every check and takes part in this wave's draw.",
            "Wait for the result of the draw on this dashboard.",
        ),
    },
    "WAITLISTED": {
        "id": (
            "Anda lolos semua pemeriksaan, tetapi kuota sudah penuh. Anda ada di daftar "
            "tunggu dan bisa terpilih jika kursi kosong atau kuota ditambah.",
            "Tidak perlu berbuat apa-apa; pantau dasbor ini.",
        ),
        "en": (
            "You passed every check, but the quota is full. You are on the waiting list "
            "and may be selected if a seat frees up or the quota is raised.",
            "Nothing to do; keep an eye on this dashboard.",
        ),
    },
    "SELECTED": {
        "id": (
            "Anda terpilih sebagai peserta. Rekening pembayaran Anda sedang diperiksa.",
            "Pastikan akun pembayaran Anda aktif dan atas nama Anda.",
        ),
        "en": (
            "You were selected as a participant. Your payout account is being checked.",
            "Make sure your payout account is active and in your own name.",
        ),
    },
    "CONFIRMED": {
        "id": (
            "Anda peserta. Kartu Anda sudah terbit dan saldo pelatihan sedang dikirim.",
            "Saldo akan terlihat di sini, biasanya paling lambat besok pagi.",
        ),
        "en": (
            "You are a participant. Your card is issued and your training balance is being sent.",
            "The balance will show here, usually by the next morning.",
        ),
    },
    "CREDITED": {
        "id": (
            "Selamat! Anda peserta dan saldo pelatihan sudah masuk ke kartu Anda.",
            "Gunakan saldo untuk membeli pelatihan pertama Anda.",
        ),
        "en": (
            "Congratulations! You are a participant and your training balance is on your card.",
            "Use the balance to buy your first training course.",
        ),
    },
    # Pending: a stage not finished yet (a partner may be slow); never a rejection.
    "PENDING_ELIGIBILITY": {
        "id": (
            "Pemeriksaan syarat dasar (usia, hasil tes) belum selesai.",
            "Tidak perlu berbuat apa-apa; kami akan melanjutkan pemeriksaan.",
        ),
        "en": (
            "The basic checks (age, test result) are not finished yet.",
            "Nothing to do; we will carry on with the checks.",
        ),
    },
    "PENDING_IDENTITY": {
        "id": (
            "Pemeriksaan data kependudukan Anda belum selesai.",
            "Tidak perlu berbuat apa-apa; hasilnya akan muncul di sini.",
        ),
        "en": (
            "The check of your data with the population registry is not finished yet.",
            "Nothing to do; the result will show here.",
        ),
    },
    "PENDING_SCREENING": {
        "id": (
            "Pemeriksaan dengan kementerian dan lembaga belum selesai.",
            "Tidak perlu berbuat apa-apa; hasilnya akan muncul di sini.",
        ),
        "en": (
            "The checks with the ministries and agencies are not finished yet.",
            "Nothing to do; the result will show here.",
        ),
    },
    "PENDING_ACCOUNT": {
        "id": (
            "Anda terpilih, tetapi pemeriksaan rekening pembayaran Anda belum selesai.",
            "Tidak perlu berbuat apa-apa; kursi Anda tetap disimpan.",
        ),
        "en": (
            "You were selected, but the check of your payout account is not finished yet.",
            "Nothing to do; your seat is kept for you.",
        ),
    },
    "PENDING_ROLLOUT": {
        "id": (
            "Anda peserta; pengiriman saldo pelatihan belum selesai.",
            "Tidak perlu berbuat apa-apa; saldo akan muncul di sini.",
        ),
        "en": (
            "You are a participant; sending your training balance is not finished yet.",
            "Nothing to do; the balance will show here.",
        ),
    },
    # Intake.
    "MALFORMED_ROW": {
        "id": (
            "Data pendaftaran Anda rusak dan tidak bisa dibaca.",
            "Daftar lagi di gelombang berikutnya dan periksa isian Anda.",
        ),
        "en": (
            "Your registration data was damaged and could not be read.",
            "Register again in the next wave and check what you enter.",
        ),
    },
    "MISSING_FIELD": {
        "id": (
            "Ada isian wajib yang kosong atau tidak sah dalam pendaftaran Anda.",
            "Daftar lagi di gelombang berikutnya dan isi semua kolom dengan benar.",
        ),
        "en": (
            "A required field of your registration was empty or not valid.",
            "Register again in the next wave and fill in every field correctly.",
        ),
    },
    "INVALID_NIK": {
        "id": (
            "NIK yang Anda isi tidak sah.",
            "Periksa NIK Anda di Dinas Kependudukan dan Pencatatan Sipil (Dukcapil), "
            "lalu daftar lagi.",
        ),
        "en": (
            "The NIK you entered is not a valid NIK.",
            "Check your NIK with the civil registry office (Dukcapil), then register again.",
        ),
    },
    "NIK_DATA_MISMATCH": {
        "id": (
            "Tanggal lahir atau jenis kelamin yang Anda isi tidak cocok dengan NIK Anda.",
            "Periksa data Anda di KTP, lalu daftar lagi di gelombang berikutnya.",
        ),
        "en": (
            "The birth date or sex you entered does not match your NIK.",
            "Check your data against your ID card, then register again in the next wave.",
        ),
    },
    "DUPLICATE_NIK": {
        "id": (
            "NIK Anda didaftarkan lebih dari sekali; hanya pendaftaran pertama yang diproses.",
            "Jika bukan Anda yang mendaftar dua kali, hubungi layanan pengaduan.",
        ),
        "en": (
            "Your NIK was registered more than once; only the first registration is processed.",
            "If you did not register twice yourself, contact the help desk.",
        ),
    },
    "EMAIL_UNVERIFIED": {
        "id": (
            "Alamat email Anda belum diverifikasi.",
            "Verifikasi email Anda, lalu daftar lagi di gelombang berikutnya.",
        ),
        "en": (
            "Your email address was not verified.",
            "Verify your email, then register again in the next wave.",
        ),
    },
    # Local eligibility.
    "UNDERAGE": {
        "id": (
            "Usia Anda di bawah batas minimal program pada tanggal acuan gelombang ini.",
            "Anda bisa mendaftar lagi setelah cukup umur.",
        ),
        "en": (
            "You were below the program's minimum age on this wave's reference date.",
            "You can register again once you are old enough.",
        ),
    },
    "TEST_FAILED": {
        "id": (
            "Nilai tes kemampuan dasar Anda di bawah batas lulus.",
            "Ikuti tes lagi dan daftar di gelombang berikutnya.",
        ),
        "en": (
            "Your basic-ability test score was below the pass mark.",
            "Take the test again and register for the next wave.",
        ),
    },
    "PRIOR_RECIPIENT": {
        "id": (
            "Anda sudah pernah menjadi peserta program; saldo hanya diberikan sekali.",
            "Tidak perlu mendaftar lagi; lihat gelombang sebelumnya di dasbor ini.",
        ),
        "en": (
            "You were already a participant of the program; the balance is given once.",
            "No need to register again; see your earlier wave on this dashboard.",
        ),
    },
    "BLACKLISTED": {
        "id": (
            "NIK Anda ada dalam daftar pencabutan kepesertaan program.",
            "Jika menurut Anda ini keliru, hubungi layanan pengaduan.",
        ),
        "en": (
            "Your NIK is on the program's revocation list.",
            "If you believe this is a mistake, contact the help desk.",
        ),
    },
    # Identity (population registry).
    "NIK_NOT_FOUND": {
        "id": (
            "NIK Anda tidak ditemukan di data kependudukan.",
            "Periksa NIK Anda di Dinas Kependudukan dan Pencatatan Sipil (Dukcapil), "
            "lalu daftar lagi.",
        ),
        "en": (
            "Your NIK was not found in the population registry.",
            "Check your NIK with the civil registry office (Dukcapil), then register again.",
        ),
    },
    "DECEASED": {
        "id": (
            "Data kependudukan mencatat pemilik NIK ini telah meninggal dunia.",
            "Jika ini keliru, hubungi Dinas Kependudukan dan Pencatatan Sipil (Dukcapil).",
        ),
        "en": (
            "The population registry records the holder of this NIK as deceased.",
            "If this is wrong, contact the civil registry office (Dukcapil).",
        ),
    },
    "BIRTH_DATE_MISMATCH": {
        "id": (
            "Tanggal lahir Anda tidak cocok dengan data kependudukan.",
            "Periksa data Anda di Dukcapil, lalu daftar lagi dengan data yang sama.",
        ),
        "en": (
            "Your birth date does not match the population registry.",
            "Check your data with the civil registry office, then register again with "
            "the same data.",
        ),
    },
    "NAME_MISMATCH": {
        "id": (
            "Nama Anda tidak cukup cocok dengan nama di data kependudukan.",
            "Daftar lagi dengan nama persis seperti di KTP Anda.",
        ),
        "en": (
            "Your name does not match the name in the population registry closely enough.",
            "Register again with your name exactly as on your ID card.",
        ),
    },
    "KK_MISMATCH": {
        "id": (
            "Nomor Kartu Keluarga (KK) Anda tidak cocok dengan data kependudukan.",
            "Periksa nomor KK Anda, lalu daftar lagi di gelombang berikutnya.",
        ),
        "en": (
            "Your family card (KK) number does not match the population registry.",
            "Check your family card number, then register again in the next wave.",
        ),
    },
    # Agency screening.
    "EXCLUDED_CIVIL_SERVANT": {
        "id": (
            "Anda terdata sebagai Aparatur Sipil Negara (ASN), yang tidak termasuk sasaran "
            "program.",
            "Jika ini keliru, hubungi layanan pengaduan.",
        ),
        "en": (
            "You are listed as a civil servant, who are not among the program's target group.",
            "If this is wrong, contact the help desk.",
        ),
    },
    "EXCLUDED_MILITARY_POLICE": {
        "id": (
            "Anda terdata sebagai anggota TNI/Polri, yang tidak termasuk sasaran program.",
            "Jika ini keliru, hubungi layanan pengaduan.",
        ),
        "en": (
            "You are listed as a member of the armed forces or police, who are not among "
            "the program's target group.",
            "If this is wrong, contact the help desk.",
        ),
    },
    "EXCLUDED_STUDENT": {
        "id": (
            "Anda terdata sebagai pelajar atau mahasiswa aktif, yang tidak termasuk "
            "sasaran program.",
            "Anda bisa mendaftar lagi setelah lulus.",
        ),
        "en": (
            "You are listed as an enrolled student, who are not among the program's target group.",
            "You can register again after you graduate.",
        ),
    },
    "EXCLUDED_VILLAGE_OFFICIAL": {
        "id": (
            "Anda terdata sebagai perangkat desa, yang tidak termasuk sasaran program.",
            "Jika ini keliru, hubungi layanan pengaduan.",
        ),
        "en": (
            "You are listed as a village official, who are not among the program's target group.",
            "If this is wrong, contact the help desk.",
        ),
    },
    "EXCLUDED_LEGISLATOR": {
        "id": (
            "Anda terdata sebagai anggota DPR/DPRD, yang tidak termasuk sasaran program.",
            "Jika ini keliru, hubungi layanan pengaduan.",
        ),
        "en": (
            "You are listed as a member of a legislature, who are not among the "
            "program's target group.",
            "If this is wrong, contact the help desk.",
        ),
    },
    "EXCLUDED_SOE_BOARD": {
        "id": (
            "Anda terdata sebagai direksi atau komisaris BUMN/BUMD, yang tidak termasuk "
            "sasaran program.",
            "Jika ini keliru, hubungi layanan pengaduan.",
        ),
        "en": (
            "You are listed as a director or commissioner of a state-owned enterprise, "
            "who are not among the program's target group.",
            "If this is wrong, contact the help desk.",
        ),
    },
    "EXCLUDED_SOCIAL_AID": {
        "id": (
            "Anda terdata sebagai penerima bantuan sosial lain yang tidak boleh "
            "digabung dengan program ini.",
            "Jika ini keliru, hubungi layanan pengaduan.",
        ),
        "en": (
            "You are listed as receiving other social aid that cannot be combined with "
            "this program.",
            "If this is wrong, contact the help desk.",
        ),
    },
    # Draw.
    "HOUSEHOLD_CAP": {
        "id": (
            "Kartu Keluarga (KK) Anda sudah mencapai batas jumlah peserta per keluarga.",
            "Tidak ada yang perlu dilakukan; kursi diberikan ke pendaftar berikutnya.",
        ),
        "en": (
            "Your family card (KK) already has the most participants allowed per family.",
            "Nothing to do; the seat went to the next registrant.",
        ),
    },
    "QUOTA_FULL": {
        "id": (
            "Anda lolos semua pemeriksaan, tetapi tidak terpilih karena kuota gelombang "
            "ini sudah penuh.",
            "Daftar lagi di gelombang berikutnya.",
        ),
        "en": (
            "You passed every check but were not selected: this wave's quota was full.",
            "Register for the next wave.",
        ),
    },
    # Payout account.
    "ACCOUNT_NOT_FOUND": {
        "id": (
            "Rekening atau akun pembayaran yang Anda isi tidak ditemukan.",
            "Periksa nomor akun Anda, lalu daftar lagi di gelombang berikutnya.",
        ),
        "en": (
            "The payout account you entered was not found.",
            "Check your account number, then register again in the next wave.",
        ),
    },
    "ACCOUNT_NIK_MISMATCH": {
        "id": (
            "Akun pembayaran yang Anda isi bukan atas NIK Anda.",
            "Gunakan akun atas nama Anda sendiri saat mendaftar lagi.",
        ),
        "en": (
            "The payout account you entered is not registered to your NIK.",
            "Use an account in your own name when you register again.",
        ),
    },
    "ACCOUNT_NOT_KYC": {
        "id": (
            "Akun pembayaran Anda belum terverifikasi (KYC / upgrade akun).",
            "Selesaikan verifikasi akun di penyedia pembayaran Anda, lalu daftar lagi.",
        ),
        "en": (
            "Your payout account has not completed identity verification (KYC).",
            "Complete the verification with your payment provider, then register again.",
        ),
    },
    "ACCOUNT_BLOCKED": {
        "id": (
            "Akun pembayaran Anda diblokir oleh penyedianya.",
            "Hubungi penyedia pembayaran Anda, lalu daftar lagi di gelombang berikutnya.",
        ),
        "en": (
            "Your payout account is blocked by its provider.",
            "Contact your payment provider, then register again in the next wave.",
        ),
    },
    # Rollout.
    "CREDIT_REJECTED": {
        "id": (
            "Penerbit kartu menolak pengisian saldo pelatihan Anda.",
            "Hubungi layanan pengaduan; petugas kami sudah diberi tahu.",
        ),
        "en": (
            "The card issuer refused to credit your training balance.",
            "Contact the help desk; our staff have been alerted.",
        ),
    },
}

TEXT = {
    "title": {"id": "Dasbor Prakerja", "en": "Prakerja dashboard"},
    "signin_heading": {"id": "Masuk", "en": "Sign in"},
    "signin_intro": {
        "id": "Masukkan NIK Anda. Kami akan mengirim kode masuk 6 angka lewat SMS ke nomor "
        "HP yang Anda daftarkan.",
        "en": "Enter your NIK. We will send a 6-digit sign-in code by SMS to the phone number "
        "you registered.",
    },
    "nik_label": {"id": "NIK (16 angka)", "en": "NIK (16 digits)"},
    "send_code": {"id": "Kirim kode", "en": "Send code"},
    "code_heading": {"id": "Masukkan kode", "en": "Enter your code"},
    "code_intro": {
        "id": "Jika NIK Anda terdaftar, kode 6 angka sudah dikirim ke nomor HP Anda. Kode "
        "berlaku 5 menit.",
        "en": "If your NIK is registered, a 6-digit code was sent to your phone. The code is "
        "valid for 5 minutes.",
    },
    "code_label": {"id": "Kode (6 angka)", "en": "Code (6 digits)"},
    "verify": {"id": "Masuk", "en": "Sign in"},
    "other_nik": {"id": "Pakai NIK lain", "en": "Use another NIK"},
    "bad_nik": {"id": "NIK harus 16 angka.", "en": "A NIK has 16 digits."},
    "bad_code": {
        "id": "Kode salah atau sudah tidak berlaku. Coba lagi atau minta kode baru.",
        "en": "The code is wrong or no longer valid. Try again or ask for a new code.",
    },
    "too_many": {
        "id": "Terlalu banyak percobaan. Coba lagi dalam {minutes} menit.",
        "en": "Too many attempts. Try again in {minutes} minutes.",
    },
    "forbidden": {
        "id": "Permintaan ditolak. Muat ulang halaman lalu coba lagi.",
        "en": "Request refused. Reload the page and try again.",
    },
    "status_heading": {"id": "Status pendaftaran Anda", "en": "Your registration"},
    "signed_in_as": {"id": "NIK", "en": "NIK"},
    "wave": {"id": "Gelombang {n}", "en": "Wave {n}"},
    "not_announced": {
        "id": "Pendaftaran Anda sedang diverifikasi. Hasilnya diumumkan di sini.",
        "en": "Your registration is being verified. The result will be announced here.",
    },
    "next_step": {"id": "Yang perlu Anda lakukan", "en": "What to do next"},
    "announcement": {"id": "Pengumuman", "en": "Announcement"},
    "card": {"id": "Kartu", "en": "Card"},
    "balance": {"id": "Saldo pelatihan", "en": "Training balance"},
    "credited_at": {"id": "Masuk pada", "en": "Credited on"},
    "no_waves": {
        "id": "Belum ada pendaftaran yang bisa ditampilkan.",
        "en": "There is no registration to show yet.",
    },
    "logout": {"id": "Keluar", "en": "Sign out"},
    "language": {"id": "English", "en": "Bahasa Indonesia"},
    "language_label": {"id": "Bahasa", "en": "Language"},
}


_LANG_MARK = re.compile(r"(?:^|\s)\[(id|en)\]\s*", re.IGNORECASE)


def message_in(message: str, lang: str) -> str:
    """The announcement's message in one language. A message written in both marks each
    part with its language, `[id] Hasil sudah diumumkan. [en] Results are out.`: the page
    in Bahasa Indonesia shows the `[id]` part, the English page the `[en]` part (or the
    other part when the message has none in that language). A message without marks is
    shown as written, in both."""
    marks = list(_LANG_MARK.finditer(message))
    if not marks:
        return message
    parts: dict[str, list[str]] = {}
    for mark, after in zip(marks, [*marks[1:], None], strict=True):
        end = after.start() if after is not None else len(message)
        part = message[mark.end() : end].strip()
        if part:
            parts.setdefault(mark.group(1).lower(), []).append(part)
    chosen = parts.get(lang) or next(iter(parts.values()), [])
    lead = message[: marks[0].start()].strip()  # before any mark: in both languages
    return " ".join([lead, *chosen] if lead else chosen)


def text(key: str, lang: str, **values: object) -> str:
    return TEXT[key][lang].format(**values) if values else TEXT[key][lang]


def explain(outcome: str, reason: str, lang: str) -> tuple[str, str, str]:
    """(headline, what happened, what to do next) for an outcome and its reason."""
    headline = OUTCOME[outcome][lang]
    key = reason or outcome
    if key in EXPLAIN:
        what, next_step = EXPLAIN[key][lang]
    elif key.startswith("EXCLUDED_"):  # an agency category configured beyond the usual
        what, next_step = _EXCLUDED_OTHER[lang]
    else:
        what, next_step = _UNKNOWN[lang]
    return headline, what, next_step


_EXCLUDED_OTHER = {
    "id": ("Anda terdata oleh kementerian atau lembaga dalam kelompok yang tidak termasuk "
           "sasaran program.",
           "Jika ini keliru, hubungi layanan pengaduan."),
    "en": ("A ministry or agency lists you in a group the program does not serve.",
           "If this is wrong, contact the help desk."),
}  # fmt: skip
_UNKNOWN = {
    "id": ("Status ini belum punya penjelasan rinci.", "Hubungi layanan pengaduan."),
    "en": ("This status has no detailed explanation yet.", "Contact the help desk."),
}


# ---------------------------------------------------------------- after the credit
# (portal.md, "After the credit"; lifecycle.md). tests/portal/test_words.py holds every
# state, reason and status below to the program's vocabularies, in both languages.

# A participant's state (with its reason where it has one): (headline, what, next step).
LIFECYCLE: dict[str, dict[str, tuple[str, str, str]]] = {
    "AWAITING_TRAINING": {
        "id": ("Menunggu pelatihan pertama",
               "Saldo pelatihan Anda sudah masuk, tetapi Anda belum membeli pelatihan.",
               "Beli pelatihan pertama di salah satu platform digital sebelum batas waktu, "
               "atau kartu dan saldonya dicabut."),
        "en": ("Waiting for your first training",
               "Your training balance is credited, but you have not bought a training yet.",
               "Buy a first training on one of the digital platforms before the deadline, "
               "or the card and its balance are taken back."),
    },
    "IN_TRAINING": {
        "id": ("Sedang mengikuti pelatihan",
               "Anda sudah membeli pelatihan pertama.",
               "Selesaikan pelatihan sampai mendapat sertifikat; insentif dibayar setelah "
               "pelatihan pertama selesai."),
        "en": ("In training",
               "You have bought your first training.",
               "Finish it and get its certificate: the incentive is paid once a first "
               "training is completed."),
    },
    "TRAINED": {
        "id": ("Pelatihan selesai, insentif berjalan",
               "Anda sudah menyelesaikan pelatihan pertama. Insentif dibayar sebulan sekali "
               "ke rekening atau dompet digital Anda yang sudah diverifikasi.",
               "Pastikan rekening Anda tetap aktif, dan isi survei yang terbuka."),
        "en": ("Training completed, incentives under way",
               "You completed a first training. The incentive is paid once a month into "
               "your verified bank account or e-wallet.",
               "Keep that account open, and answer the surveys that are open."),
    },
    "COMPLETED": {
        "id": ("Semua insentif selesai",
               "Semua cicilan insentif Anda sudah diproses.",
               "Tidak ada lagi yang perlu dilakukan selain mengisi survei yang masih terbuka."),
        "en": ("All incentives done",
               "Every incentive installment of yours has been processed.",
               "Nothing more to do, except any survey still open."),
    },
    "REVOKED:NO_TRAINING_IN_TIME": {
        "id": ("Kartu dicabut",
               "Anda tidak membeli pelatihan pertama sampai batas waktu, sehingga kartu "
               "dan sisa saldonya dicabut.",
               "Anda bisa mendaftar lagi di gelombang berikutnya jika masih memenuhi syarat."),
        "en": ("Card revoked",
               "You bought no first training by the deadline, so the card and what was "
               "left on it were taken back.",
               "You may register again in a later wave if you still qualify."),
    },
    "REVOKED:BLACKLISTED": {
        "id": ("Kartu dicabut",
               "Nama Anda masuk daftar hitam program sebelum pelatihan pertama selesai, "
               "sehingga kartu ditutup.",
               "Jika ini keliru, hubungi layanan pengaduan."),
        "en": ("Card revoked",
               "You were put on the program's blacklist before completing a first training, "
               "so the card was closed.",
               "If this is wrong, contact the help desk."),
    },
    "STOPPED": {
        "id": ("Pembayaran dihentikan",
               "Pemeriksaan ulang sebelum pembayaran menemukan Anda tidak lagi memenuhi "
               "syarat. Tidak ada pembayaran lagi; yang sudah dibayar tidak ditarik.",
               "Jika ini keliru, hubungi layanan pengaduan."),
        "en": ("Payments stopped",
               "A check before a payment found you no longer qualify. Nothing more is paid; "
               "what was paid before is not taken back.",
               "If this is wrong, contact the help desk."),
    },
}  # fmt: skip

# Why a payment was stopped or failed: (what it means, what to do).
PAYMENT_REASON: dict[str, dict[str, tuple[str, str]]] = {
    "ACCOUNT_CLOSED": {
        "id": ("Rekening tujuan sudah ditutup; uang tidak terkirim.",
               "Hubungi layanan pengaduan untuk memperbarui rekening Anda."),
        "en": ("The receiving account is closed; no money moved.",
               "Contact the help desk to update your account."),
    },
    "ACCOUNT_BLOCKED": {
        "id": ("Rekening tujuan diblokir oleh bank atau dompet digital; uang tidak terkirim.",
               "Hubungi bank atau dompet digital Anda, lalu layanan pengaduan."),
        "en": ("The bank or e-wallet has blocked the account; no money moved.",
               "Contact your bank or e-wallet, then the help desk."),
    },
    "LIMIT_EXCEEDED": {
        "id": ("Saldo rekening tujuan melewati batas yang diizinkan; uang tidak terkirim.",
               "Naikkan batas akun (misalnya verifikasi penuh dompet digital), lalu hubungi "
               "layanan pengaduan."),
        "en": ("The account would go over its allowed limit; no money moved.",
               "Raise the account's limit (for example a fully verified e-wallet), then "
               "contact the help desk."),
    },
    "BLACKLISTED": {
        "id": ("Anda masuk daftar hitam program.",
               "Jika ini keliru, hubungi layanan pengaduan."),
        "en": ("You are on the program's blacklist.",
               "If this is wrong, contact the help desk."),
    },
    "DECEASED": {
        "id": ("Data kependudukan mencatat pemilik NIK ini telah meninggal dunia.",
               "Jika ini keliru, perbaiki data di kantor Dukcapil setempat."),
        "en": ("The population registry records the holder of this NIK as deceased.",
               "If this is wrong, have the record corrected at your civil registry office."),
    },
    "EXCLUDED_CIVIL_SERVANT": {
        "id": ("Anda kini terdata sebagai ASN (PNS).",
               "Jika ini keliru, hubungi layanan pengaduan."),
        "en": ("You are now listed as a civil servant.",
               "If this is wrong, contact the help desk."),
    },
    "EXCLUDED_MILITARY_POLICE": {
        "id": ("Anda kini terdata sebagai anggota TNI atau Polri.",
               "Jika ini keliru, hubungi layanan pengaduan."),
        "en": ("You are now listed as military or police.",
               "If this is wrong, contact the help desk."),
    },
    "EXCLUDED_STUDENT": {
        "id": ("Anda kini terdata sebagai pelajar atau mahasiswa aktif.",
               "Jika ini keliru, hubungi layanan pengaduan."),
        "en": ("You are now listed as an active student.",
               "If this is wrong, contact the help desk."),
    },
    "EXCLUDED_VILLAGE_OFFICIAL": {
        "id": ("Anda kini terdata sebagai kepala atau perangkat desa.",
               "Jika ini keliru, hubungi layanan pengaduan."),
        "en": ("You are now listed as a village head or official.",
               "If this is wrong, contact the help desk."),
    },
    "EXCLUDED_LEGISLATOR": {
        "id": ("Anda kini terdata sebagai anggota DPR, DPD atau DPRD.",
               "Jika ini keliru, hubungi layanan pengaduan."),
        "en": ("You are now listed as a member of a legislature.",
               "If this is wrong, contact the help desk."),
    },
    "EXCLUDED_SOE_BOARD": {
        "id": ("Anda kini terdata sebagai direksi, komisaris atau dewan pengawas BUMN/BUMD.",
               "Jika ini keliru, hubungi layanan pengaduan."),
        "en": ("You are now listed on the board of a state-owned enterprise.",
               "If this is wrong, contact the help desk."),
    },
    "EXCLUDED_SOCIAL_AID": {
        "id": ("Anda kini terdata sebagai penerima bantuan sosial lain yang tidak boleh "
               "digabung dengan program ini.",
               "Jika ini keliru, hubungi layanan pengaduan."),
        "en": ("You are now listed as receiving another social aid that cannot be combined "
               "with this program.",
               "If this is wrong, contact the help desk."),
    },
}  # fmt: skip
_PAYMENT_REASON_OTHER = {
    "id": ("Kementerian atau lembaga kini mendata Anda dalam kelompok yang tidak termasuk "
           "sasaran program.", "Jika ini keliru, hubungi layanan pengaduan."),
    "en": ("A ministry or agency now lists you in a group the program does not serve.",
           "If this is wrong, contact the help desk."),
}  # fmt: skip
_PAYMENT_REASON_UNKNOWN = {
    "id": ("Pembayaran ini tidak dapat diproses.", "Hubungi layanan pengaduan."),
    "en": ("This payment could not be made.", "Contact the help desk."),
}

PAYMENT_STATUS = {
    "SCHEDULED": {"id": "Terjadwal", "en": "Scheduled"},
    "DUE": {"id": "Sedang diproses", "en": "Being paid"},
    "PAID": {"id": "Sudah dibayar", "en": "Paid"},
    "STOPPED": {"id": "Dihentikan", "en": "Stopped"},
    "FAILED": {"id": "Gagal dikirim", "en": "Failed"},
}
SURVEY_STATUS = {
    "LOCKED": {"id": "Belum dibuka", "en": "Not open yet"},
    "OPEN": {"id": "Terbuka, silakan isi", "en": "Open: please answer"},
    "ANSWERED": {
        "id": "Sudah diisi (pembayarannya di daftar di atas)",
        "en": "Answered (its payment is listed above)",
    },
    "PAID": {"id": "Sudah diisi dan dibayar", "en": "Answered and paid"},
}

# The survey (portal.md, "Surveys"): each question and the words of its fixed choices.
SURVEY_QUESTIONS: dict[str, dict[str, str]] = {
    "work_status": {"id": "Apa kegiatan utama Anda sekarang?",
                    "en": "What is your main activity now?"},
    "training_helped": {"id": "Seberapa membantu pelatihan ini? (1 = tidak membantu, "
                        "5 = sangat membantu)",
                        "en": "How much did the training help? (1 = not at all, "
                        "5 = very much)"},
    "field": {"id": "Bidang pelatihan yang Anda ikuti", "en": "The field of your training"},
    "applied_for_job": {"id": "Apakah Anda melamar kerja sejak pelatihan?",
                        "en": "Have you applied for a job since the training?"},
    "recommend": {"id": "Apakah Anda akan menyarankan program ini kepada orang lain?",
                  "en": "Would you recommend the program to others?"},
    "comment": {"id": "Komentar (tidak wajib, paling banyak 500 karakter)",
                "en": "Comment (optional, at most 500 characters)"},
}  # fmt: skip
SURVEY_CHOICES: dict[str, dict[str, dict[str, str]]] = {
    "work_status": {
        "employed": {"id": "Bekerja", "en": "Employed"},
        "own_business": {"id": "Usaha sendiri", "en": "Own business"},
        "not_working": {"id": "Tidak bekerja", "en": "Not working"},
    },
    "training_helped": {str(n): {"id": str(n), "en": str(n)} for n in range(1, 6)},
    "field": {
        "digital": {"id": "Digital", "en": "Digital"},
        "sales": {"id": "Penjualan dan pemasaran", "en": "Sales and marketing"},
        "hospitality": {"id": "Pariwisata dan kuliner", "en": "Hospitality and food"},
        "language": {"id": "Bahasa", "en": "Languages"},
        "trades": {"id": "Keterampilan teknik", "en": "Trades"},
        "other": {"id": "Lainnya", "en": "Other"},
    },
    "applied_for_job": {"true": {"id": "Ya", "en": "Yes"}, "false": {"id": "Tidak", "en": "No"}},
    "recommend": {"true": {"id": "Ya", "en": "Yes"}, "false": {"id": "Tidak", "en": "No"}},
}

TEXT.update(
    {
        "program": {"id": "Setelah saldo masuk", "en": "After the credit"},
        "deadline": {"id": "Batas beli pelatihan pertama", "en": "Buy a first training by"},
        "days_left": {"id": "{n} hari lagi", "en": "{n} days left"},
        "last_day": {"id": "hari ini hari terakhir", "en": "today is the last day"},
        "deadline_passed": {"id": "batas waktu sudah lewat", "en": "the deadline has passed"},
        "deadline_met": {"id": "sudah terpenuhi", "en": "done: a training was bought in time"},
        "balance_left": {"id": "Sisa saldo pelatihan", "en": "Training balance left"},
        "payments": {"id": "Pembayaran", "en": "Payments"},
        "no_payments": {
            "id": "Belum ada pembayaran. Insentif dijadwalkan setelah pelatihan pertama selesai.",
            "en": "No payments yet. Incentives are scheduled once a first training is completed.",
        },
        "incentive_k": {"id": "Insentif ke-{k}", "en": "Incentive {k}"},
        "survey_payment_k": {"id": "Survei ke-{k}", "en": "Survey {k}"},
        "due_on": {"id": "Jadwal", "en": "Due"},
        "paid_on": {"id": "Dibayar", "en": "Paid"},
        "surveys": {"id": "Survei", "en": "Surveys"},
        "survey_k": {"id": "Survei ke-{k}", "en": "Survey {k}"},
        "answer_survey": {"id": "Isi survei ke-{k}", "en": "Answer survey {k}"},
        "survey_heading": {"id": "Survei ke-{k}", "en": "Survey {k}"},
        "survey_intro": {
            "id": "Jawaban Anda membantu kami memperbaiki program. Setelah Anda mengisi, "
            "{amount} dibayar ke rekening Anda pada pembayaran berikutnya.",
            "en": "Your answers help us improve the program. Once you answer, {amount} is "
            "paid into your account at the next payout.",
        },
        "survey_send": {"id": "Kirim jawaban", "en": "Send answers"},
        "survey_done": {
            "id": "Terima kasih. Jawaban Anda sudah tersimpan; pembayarannya diproses pada "
            "pembayaran berikutnya.",
            "en": "Thank you. Your answers are saved; the payment is made at the next payout.",
        },
        "survey_already": {
            "id": "Survei ini sudah Anda isi. Jawaban hanya bisa dikirim sekali.",
            "en": "You have already answered this survey. Answers can be sent only once.",
        },
        "survey_invalid": {
            "id": "Jawaban belum lengkap. Pilih satu jawaban untuk setiap pertanyaan; "
            "komentar paling banyak 500 karakter.",
            "en": "Some answers are missing. Choose one answer for each question; a comment "
            "has at most 500 characters.",
        },
        "survey_not_open": {
            "id": "Survei ini belum dibuka untuk Anda. Survei ke-k terbuka setelah insentif "
            "ke-k dibayar.",
            "en": "This survey is not open for you. Survey k opens once incentive k is paid.",
        },
        "survey_choose": {"id": "Pilih satu", "en": "Choose one"},
        "back_to_status": {"id": "Kembali ke status", "en": "Back to your status"},
        "reason_label": {"id": "Artinya", "en": "What it means"},
    }
)


def lifecycle_explain(state: str, reason: str, lang: str) -> tuple[str, str, str]:
    """(headline, what happened, what to do next) for a participant's state and reason."""
    entry = LIFECYCLE.get(f"{state}:{reason}") or LIFECYCLE.get(state)
    if entry is None:
        return (_UNKNOWN[lang][0], _UNKNOWN[lang][0], _UNKNOWN[lang][1])
    return entry[lang]


def payment_reason(reason: str, lang: str) -> tuple[str, str]:
    """(what it means, what to do) for a stopped or failed payment."""
    if reason in PAYMENT_REASON:
        return PAYMENT_REASON[reason][lang]
    if reason.startswith("EXCLUDED_"):
        return _PAYMENT_REASON_OTHER[lang]
    return _PAYMENT_REASON_UNKNOWN[lang]


def date_text(iso_date: str, lang: str) -> str:
    """`21 Mei 2020` / `21 May 2020` for an ISO date (already a WIB calendar date)."""
    d = datetime.fromisoformat(iso_date[:10])
    return f"{d.day} {_MONTHS[lang][d.month - 1]} {d.year}"


def wib_iso_text(iso: str, lang: str) -> str:
    """An aware ISO time (WIB) as `26 Mei 2020, 02.14 WIB`."""
    t = datetime.fromisoformat(iso).astimezone(WIB)
    month = _MONTHS[lang][t.month - 1]
    clock = f"{t.hour:02d}.{t.minute:02d}" if lang == "id" else f"{t.hour:02d}:{t.minute:02d}"
    return f"{t.day} {month} {t.year}, {clock} WIB"
