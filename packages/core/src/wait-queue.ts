/** A FIFO queue with O(1) push/shift and O(n) removal of a given entry. */
export class WaitQueue<T> {
  #items: (T | undefined)[] = []
  #head = 0

  get length(): number {
    return this.#items.length - this.#head
  }

  push(item: T): void {
    this.#items.push(item)
  }

  peek(): T | undefined {
    return this.#items[this.#head]
  }

  shift(): T | undefined {
    if (this.#head === this.#items.length) return undefined
    const item = this.#items[this.#head]
    this.#items[this.#head++] = undefined
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head)
      this.#head = 0
    }
    return item
  }

  remove(item: T): boolean {
    const i = this.#items.indexOf(item, this.#head)
    if (i === -1) return false
    this.#items.splice(i, 1)
    return true
  }

  drain(): T[] {
    const out = this.#items.slice(this.#head) as T[]
    this.#items = []
    this.#head = 0
    return out
  }
}
