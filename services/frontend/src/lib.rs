//! The web page listing images, their status and the people found.
