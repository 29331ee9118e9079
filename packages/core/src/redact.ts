/** Replaces the password of any URL inside `text` (`scheme://user:password@`) with `***`. */
export function redactUrls(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)[^@\s]*@/gi, '$1***@')
}

/** Removes every occurrence of a known secret from `text`. */
export function redactSecret(text: string, secret: string | undefined): string {
  let out = redactUrls(text)
  if (secret) {
    out = out.split(secret).join('***')
    const encoded = encodeURIComponent(secret)
    if (encoded !== secret) out = out.split(encoded).join('***')
  }
  return out
}
