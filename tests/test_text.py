"""Search keys: the spellings Persian text really arrives in compare equal.

The sentences are taken from the seed texts (a Kerman news item that mixes
Arabic ي/ك into Persian, a Tehran item that lost its zero-width non-joiners,
a Russian university news item).
"""

from __future__ import annotations

import pytest

from sada.pipeline.domain.text import ascii_digits, normalize_for_search

ZWNJ = "\u200c"

# Seed 004, as published: Arabic yeh and kaf among Persian letters.
KERMAN_AS_SENT = (
    "حدود ۲۷۰۰ برنامه در پویش ملی در بهشت برگزار گردید كه بیش از ۲۴۰ هزار نفر "
    "در ویژهبرنامههای پویش شركت كردند"
)
KERMAN_PERSIAN_LETTERS = (
    "حدود ۲۷۰۰ برنامه در پویش ملی در بهشت برگزار گردید که بیش از ۲۴۰ هزار نفر "
    "در ویژهبرنامههای پویش شرکت کردند"
)
KERMAN_OFFICIALS = "معاونان و مديران ستادي نهاد نمایندگی مقام معظم رهبري در دانشگاهها"

# Seed 000, as published (non-joiners lost), and as a careful typist writes it.
TEHRAN_LOST = (
    "برای برخی اقدامات ساده مانند ایجاد کانالهای ارتباطی در واحدها، نیازی به اخذ مجوز از ستاد نیست"
)
TEHRAN_ZWNJ = (
    f"برای برخی اقدامات ساده مانند ایجاد کانال{ZWNJ}های ارتباطی در واحدها، "
    "نیازی به اخذ مجوز از ستاد نیست"
)

RUSSIAN = "директор Центра фандрайзинга и работы с выпускниками СПбПУ Сергей Чиченёв"


def test_arabic_yeh_and_kaf_match_persian_letters() -> None:
    assert KERMAN_AS_SENT != KERMAN_PERSIAN_LETTERS
    assert normalize_for_search(KERMAN_AS_SENT) == normalize_for_search(KERMAN_PERSIAN_LETTERS)


def test_a_persian_query_finds_text_typed_with_arabic_letters() -> None:
    query = normalize_for_search("مدیران ستادی")
    assert query in normalize_for_search(KERMAN_OFFICIALS)
    assert normalize_for_search("شرکت کردند") in normalize_for_search(KERMAN_AS_SENT)


def test_text_with_and_without_zero_width_non_joiners_compares_equal() -> None:
    assert TEHRAN_LOST != TEHRAN_ZWNJ
    assert normalize_for_search(TEHRAN_LOST) == normalize_for_search(TEHRAN_ZWNJ)
    assert normalize_for_search(f"ویژه{ZWNJ}برنامه{ZWNJ}های") in normalize_for_search(
        KERMAN_AS_SENT
    )


def test_digits_compare_equal_whatever_the_script() -> None:
    keys = {normalize_for_search(f"حدود {n} برنامه") for n in ("۲۷۰۰", "٢٧٠٠", "2700")}
    assert len(keys) == 1
    assert ascii_digits("تلفن: ۹۶۶۶۴۰۰۰-۹ و ٠٩") == "تلفن: 96664000-9 و 09"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("تأکید مدیر روابط عمومی", "تاکید مدیر روابط عمومی"),  # hamza written or not
        ("ارتباط مؤثر و دوسویه", "ارتباط موثر و دوسویه"),
        ("پائیز", "پاییز"),
        ("برنامهٔ هفتگی", "برنامه هفتگی"),
        ("برنامۀ هفتگی", "برنامه هفتگی"),
        ("مدیـــران", "مدیران"),  # stretched with tatweel
        ("\u200fپیشنهاد\u200e", "پیشنهاد"),  # direction marks
        ("ﻣﺪﯾﺮان", "مدیران"),  # Arabic presentation forms
        ("مُدیران", "مدیران"),  # a vowel mark
    ],
)
def test_spelling_variants_compare_equal(one: str, other: str) -> None:
    assert normalize_for_search(one) == normalize_for_search(other)


def test_russian_and_latin_compare_without_case_and_yo() -> None:
    assert normalize_for_search(RUSSIAN) == normalize_for_search(RUSSIAN.upper().replace("Ё", "Е"))
    assert normalize_for_search("Политех LEPOTA") == normalize_for_search("ПОЛИТЕХ lepota")


def test_white_space_runs_are_one_space() -> None:
    assert normalize_for_search("  واحد\u00a0 نظارت\n\tو ارزیابی ") == "واحد نظارت و ارزیابی"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("راه", "راهها"),
        ("کرد", "کرم"),
        ("شکایت", "شکایات"),
        ("Сергей", "Сергий"),
        ("۱۲", "۲۱"),
    ],
)
def test_different_words_stay_different(one: str, other: str) -> None:
    assert normalize_for_search(one) != normalize_for_search(other)
