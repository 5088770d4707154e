//! RSA keys for the demo gateway simulator only. ring signs with RSA but cannot generate RSA
//! keys, and the CEM profile requires RSA, so the demo ships these. They protect nothing: the
//! certificates made with them are issued at run time by a throwaway demo CA and served on
//! loopback. Never use them for anything else.

/// A demo-only RSA-2048 private key (PKCS#8 PEM).
pub const GATEWAY_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDHanBow8dNoAd2\n\
mpnLp3Jywyr0pOm0TZTJhL1dCrZWevZ2uHcKfaAH7xI1te0OybFd7X/4OX+7Hx9w\n\
V3bQx3ucLeJ3b8Tj2CTBKc/P18bj1jM7HoW8I2AIIxDTTuDH4V5cgTxtSNg6ROyu\n\
VQz6YyKPOu24exnr1w0ArervO5KiTwTxo3ZmKeF3NyvmHVze3Xr5ROkUkYQ0phef\n\
1CZzJoPOihwxZnuoWcYtGBDNIHjAqcwYeBRuOcaxkDdVPUhShLtXbhtnvfGuhn8+\n\
05lOtsQCMmR5IBMbCKrfS9RkI9Yv0WimNXj2apzNXD60qj2XXe6JAFWLOGuHWxHj\n\
v2a4CYwpAgMBAAECggEAEqTbrhvRxCroT7ksFFuLKnofR8CsXfBb7wxTRQHlose7\n\
x8U+0fMFVYCPUAi6iWWniMvV6U/85nKGNrNitynTX3p1wCtpudChPRMK7Bh1LqN9\n\
5jLYF4sqJRCcN9lZ0C48q4LksqX7G1WK2FC41icTGdeNVrBhr8hLHatk+el0r+pv\n\
oNFT5mx+I7xGVeAdfFQ1h8VQvWhSQrwWPWGmDh7xlfzRudIy0ycfi01pcory8weh\n\
RfqjT92HeQ6BuJWNEm8PmaF0e88X0NB+002fTc1H6QvWbrML/5qOHBCcWY12a9Jf\n\
UmZHOKGm+g9Z1dvSblI67T4THXZ8fkvRAn18FjGm1QKBgQDi9JLQJ+P4hJuq5R35\n\
arjn2t+D1vW1EMCg/zpAK/yfXHnldZs+AaydGqymMFuR4KaiDj3Dhyj87+NyIEEX\n\
I/OLPC5LY9FmqBzl90/dB3C6Ci3fKwzBVC945OXUj2aFGKtRZOEEE3HR91BYU5u5\n\
AKVmaN3iH75+DeaY3JnfSYVhHQKBgQDg75+9HjivCm0KfK48TBPeSxOOrXvnFAFV\n\
BCXl/sIJwivNCzN3gKMqqagaTTPPB5iccOhB3Ih3AaxR7jqTDbN/sL+P9GY5SQTE\n\
FN5HqVxB4OG6lYgT0gBoZxoufjrxC8BWtWG3hRtMbjqdbpObuAC1L+AWn6VBg8MH\n\
Qc6HOczVfQKBgCxKutQw1MbNamvhpwXkFA37ox9htjYN/OnupXmcnAKl04w6dX+W\n\
aA+JAySzz0sa4qpByT/9grxKPMMrFEjl1UPZDNfdtSIpsOoYZ9ek+hT0o5soFact\n\
PM6FLW1cRw+2jsilvVxERzRI5b83Ie7q91yTHqpgs5Z6NASlGMqA2KzpAoGAEb92\n\
eCKRUGZfMiuiR8ms66Y61dAkbZgrfrzEDMCsKL70W8pddjllJnGafPDIfLZZuUZD\n\
XSb8cX9lTFWis4WqOxIEG2SqSCzVvm7zFu5rBButU96GjSHNvG8eJrr5BZnqxCyt\n\
mCBdhgtQfqmB5hB/pcwwPzi7fk7aLZForUzHN7UCgYBHypebq0B/WBghm2M1NotO\n\
giTUzNV9pfRTAC6ZmOChlcIRrCnwOlJQ1L3jhDoB1CBVLaXw9s+xwupXNmOho9B6\n\
m5gfiw5DaN5TMIwAhSIT9ss/C2Og/b6rG5kr1DmnRqkc4glVyopJbDjIo2xCAj9o\n\
eYNQ+LzqfrbpjsGkFJw4rg==\n\
-----END PRIVATE KEY-----\n\
";

/// A demo-only RSA-2048 private key (PKCS#8 PEM).
pub const RENEWED_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQClq9uBBfYrMPSe\n\
EJKse3IM8SAShrVmPhLMN7yaWxl/4Ux+usMHph8ENwzs9jtOJGuaqp51kLhKRb1M\n\
hzWNPq4MpgG3i040KO6UIG/8Jm088fpGsQpQRJJxq4S6Mn5NLjqtREPt5yhII00B\n\
ReMEbnRZPVtoiOoNwzqlWOt6rYifLl5BTl85RpGid83svSftFmH1xTU6IN3lKcvd\n\
IvkB2betiTC79U4Et7Hv/IXDqOu3EPjpjaAp0KvuBuSxAG8ak082iMoaPt6gI9PT\n\
cw8gwfRxh45g7iXZVXXULseboytNOrptRWB2B+36eDS6fNyTC1Q/gQ10u2Uu9zrS\n\
VBF1XUE7AgMBAAECggEAAalP5UeNhn5bZsc/Dd9SL2cuxF6CLMJgvbzSNZUz3Qvv\n\
kIRaO1Ywx5RBdpIEtYSv1rO6UYESYlTc2XiLpN0JjRNZY8XiW6tn+/C4w1ejmBZd\n\
/DlatcQSRnUdX0V/pJrtSmzQCwHIgGpofuzX/cAr0BhuEOFfLu4BfDIAcNEA1GGG\n\
bW0R0LVi2f7fW2YwjRE/1U2dYlXmg/PqbCJagyuxdSr5oB/3WJ/cKBHrCVtMrLL4\n\
tOztCN1tno+MFc+1eE+8aVv85TV3FVjZulvzA3qBGY3ODnKM7geG84b9iHNmQmG+\n\
f0MokOoCdSg/kSmDeGAa8f3ZNReNk8E47o0IZfy3+QKBgQDnZ1sbGS3r4iw1DfUM\n\
m6fMr1wC0+Ih5ygwF1uQMm6aitD4GFrJ+UpA8qmolOqQD03n7kG3Yl9OhpGqtoGb\n\
w+IV6Eo961pNaByiXX2WEfmjFvONwqQzz8yVFgda6vZRnkf2HcmkI2mieA4TnRYU\n\
H6kMmpI6UEI5BTBnOdeKcbh4yQKBgQC3R+Fdh+GeLHeyzorqVTXOoDA5yrbur/Yq\n\
ioUFqs6A4Tj0oN54kvTxB94Mkc1JbodWzU8YvnhwIiQ0W5EbZHfLLDNDdeVfIIP6\n\
bbW5Yoz/Du+/af7X2jlzWV+v59/oQ7BmfRSUM5DvJ8UwuwscL4y5ZyJ/h4+kryCR\n\
E1bKj5Nv4wKBgC06JTNZq4ED9pH0BWYOcjBuQbSHxxXLQS6NEidPxBBOe2NSF0SM\n\
hbfF9eTuHh5D730aMxvtjSUi5guQmipgkaqoeQI7Iq4oYBhX33jaUIlQrg+R8Ff0\n\
EE8/O/bIH5Z6MiRnVAbRqQ7JGi85L5yFR5wgBd6B2z+bxQcX5gm4Ck8JAoGBAIuC\n\
3ZtyeV0LgDnNWpSxM/oKmWsEUWcy7fDH7CW6NOKJje84HOAvDOAEGxP6UAdbaQ27\n\
zj+JjOfeNSzdnoD5Yu52wLbTITvd5lhT9oYc7DKiTgCoUGJCLIUPPPULTbbg/3+k\n\
Kmv9LI+++Cz106kq0LW4OdxVdhPncqS70c7yp0n9AoGAfbJok+yaNrBmro1pPHRM\n\
1GJm1Ntup1fXIHgKT+sgBfFgJM9XgPVxm3bE7uxyreWwZM8TUmRFhuF+HzQCMO8/\n\
JWK/R8v3YIUsaTgqIzFhrlsl5yt4RVlk9Gp7Gc9IAF9jQMFoZym7N7+O+DBvsR4U\n\
g1mpMlpqdp1iU/fKYJdX1yo=\n\
-----END PRIVATE KEY-----\n\
";
